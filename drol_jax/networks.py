"""Networks shared by the agents: MLP, policy heads, critics, a state value, a log-parameter.

The Gaussian actor lives in ``drol_jax.gaussian_actor``, apart, so that the agents without one do
not import distrax (and TensorFlow Probability under it) at start-up.

Parameter names follow the official DROL and FQL code, so checkpoints move both ways: a policy
head keeps its layers under ``mlp/Dense_i``, the critic under ``value_net/Dense_i`` and
``value_net/LayerNorm_i`` with the ensemble on the leading axis of every array, the state value
under ``value_net/...`` without that axis.

Every module that sees observations takes an optional ``encoder`` (an image encoder from
``drol_jax.encoders``), kept under the module as ``encoder/...``, as FQL's visual agents do: each
module owns its encoder. Each state is encoded once, and its features are broadcast over the
extra batch axes of the conditions (K candidates per state, say; ``encode_like``), which gives
the outputs of encoding a tiled copy of the images at 1/K of the encoder's cost. Without an
encoder the observations are broadcast the same way, so callers need not tile states.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def default_init(scale: float = 1.0):
    """Variance-scaling init (fan_avg, uniform), the kernel init FQL uses everywhere."""
    return nn.initializers.variance_scaling(scale, 'fan_avg', 'uniform')


class MLP(nn.Module):
    """Dense layers with GELU; optional LayerNorm after each activation.

    ``hidden_dims`` lists every layer's width including the output layer; the output layer has
    no activation and no LayerNorm unless ``activate_final`` (a trunk feeding other heads).
    """

    hidden_dims: Sequence[int]
    layer_norm: bool = False
    activate_final: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Apply the network to the last axis of ``x``."""
        for i, width in enumerate(self.hidden_dims):
            x = nn.Dense(width, kernel_init=default_init())(x)
            if i < len(self.hidden_dims) - 1 or self.activate_final:
                x = nn.gelu(x)
                if self.layer_norm:
                    x = nn.LayerNorm()(x)
        return x


def encode_like(
    encoder: nn.Module | None,
    observations: jnp.ndarray,
    condition: jnp.ndarray,
    is_encoded: bool = False,
) -> jnp.ndarray:
    """State features broadcast to ``condition``'s batch shape, ready to concatenate with it.

    ``observations`` are encoded (unless ``encoder`` is None or ``is_encoded``), giving features
    of shape ``S + (F,)``; ``condition`` has shape ``S + E + (d,)`` with ``E`` extra batch axes
    (K candidates per state, say), over which each state's features are repeated.
    """
    features = observations if encoder is None or is_encoded else encoder(observations)
    extra = condition.ndim - features.ndim
    if extra < 0:
        raise ValueError(
            f'conditions of shape {condition.shape} have fewer batch axes than the state '
            f'features {features.shape}'
        )
    features = features.reshape((*features.shape[:-1], *(1,) * extra, features.shape[-1]))
    return jnp.broadcast_to(features, (*condition.shape[:-1], features.shape[-1]))


def batch_shape(observations: jnp.ndarray, ob_dims: Sequence[int] | None) -> tuple[int, ...]:
    """The batch axes of ``observations`` whose single observation has shape ``ob_dims``.

    ``ob_dims`` None means flat state vectors (one trailing axis); an image has three.
    """
    ob_ndim = 1 if ob_dims is None else len(ob_dims)
    return tuple(observations.shape[: observations.ndim - ob_ndim])


class ConditionedPolicy(nn.Module):
    """An MLP on ``concat(encoder(observations), *conditions)`` with a linear ``output_dim`` head.

    Serves as DROL's actor ``pi(s, z)``, FQL's one-step policy ``mu(s, z)`` and FQL's flow
    vector field ``v(s, x_t, t)``: all three are "state plus conditioning vectors in, action
    out". The conditions may carry extra trailing batch axes (``encode_like``); with
    ``is_encoded=True`` the observations are features already (FQL's flow steps encode once).
    The output is unbounded; callers clip actions to [-1, 1].
    """

    hidden_dims: Sequence[int]
    output_dim: int
    layer_norm: bool = False
    encoder: nn.Module | None = None

    @nn.compact
    def __call__(
        self, observations: jnp.ndarray, *conditions: jnp.ndarray, is_encoded: bool = False
    ) -> jnp.ndarray:
        """Outputs of shape ``conditions[0].shape[:-1] + (output_dim,)``."""
        if conditions:
            features = encode_like(self.encoder, observations, conditions[0], is_encoded)
        else:
            features = observations if self.encoder is None else self.encoder(observations)
        x = jnp.concatenate([features, *conditions], axis=-1)
        return MLP((*self.hidden_dims, self.output_dim), layer_norm=self.layer_norm, name='mlp')(x)


class EnsembleCritic(nn.Module):
    """``num_ensembles`` independent Q-networks on ``concat(encoder(s), a)``; output (E, ...).

    The ensemble members share the module's one encoder, as in FQL's ``Value``.
    """

    hidden_dims: Sequence[int]
    layer_norm: bool = True
    num_ensembles: int = 2
    encoder: nn.Module | None = None

    @nn.compact
    def __call__(self, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        """Q-values with the ensemble on the leading axis, shape ``(E, *actions.shape[:-1])``."""
        ensemble = nn.vmap(
            MLP,
            variable_axes={'params': 0},
            split_rngs={'params': True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_ensembles,
        )
        x = jnp.concatenate([encode_like(self.encoder, observations, actions), actions], axis=-1)
        value_net = ensemble((*self.hidden_dims, 1), layer_norm=self.layer_norm, name='value_net')
        return value_net(x)[..., 0]


class StateValue(nn.Module):
    """``V(s)``: one MLP on the observations, output shape ``observations.shape[:-1]``."""

    hidden_dims: Sequence[int]
    layer_norm: bool = True
    encoder: nn.Module | None = None

    @nn.compact
    def __call__(self, observations: jnp.ndarray) -> jnp.ndarray:
        """State values, one per observation."""
        features = observations if self.encoder is None else self.encoder(observations)
        value_net = MLP((*self.hidden_dims, 1), layer_norm=self.layer_norm, name='value_net')
        return value_net(features)[..., 0]


class LogParam(nn.Module):
    """A positive scalar stored as its logarithm (``log_value``), e.g. an entropy weight."""

    init_value: float = 1.0

    @nn.compact
    def __call__(self) -> jnp.ndarray:
        """The scalar, ``exp(log_value)``."""
        # float32 explicitly: a weakly typed initial value would change type at the first update
        # and make every jitted update compile twice.
        log_value = self.param(
            'log_value', lambda _: jnp.full((), jnp.log(self.init_value), jnp.float32)
        )
        return jnp.exp(log_value)


def euler_flow_actions(
    velocity: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray], noises: jnp.ndarray, steps: int
) -> jnp.ndarray:
    """Integrate a flow from ``noises`` at t = 0 to t = 1 in ``steps`` Euler steps; clip to [-1, 1].

    ``velocity(x_t, t)`` gets the current points and a time column of shape
    ``(*noises.shape[:-1], 1)`` holding ``i / steps`` at step ``i``.
    """

    def euler_step(actions, i):
        t = jnp.full((*noises.shape[:-1], 1), i / steps)
        return actions + velocity(actions, t) / steps, None

    actions, _ = jax.lax.scan(euler_step, noises, jnp.arange(steps))
    return jnp.clip(actions, -1, 1)


def aggregate_ensemble(q_values: jnp.ndarray, how: str) -> jnp.ndarray:
    """Reduce an ensemble's leading axis with 'min' (pessimistic) or 'mean'."""
    if how not in ('min', 'mean'):
        raise ValueError(f"ensemble aggregation must be 'min' or 'mean', got {how!r}")
    return q_values.min(axis=0) if how == 'min' else q_values.mean(axis=0)


def broadcast_states(observations: jnp.ndarray, num: int) -> jnp.ndarray:
    """Repeat each state ``num`` times on a new axis: ``(..., obs) -> (..., num, obs)``.

    Lets one batched network call evaluate ``num`` latents (or actions) per state.
    """
    return jnp.broadcast_to(
        observations[..., None, :], (*observations.shape[:-1], num, observations.shape[-1])
    )
