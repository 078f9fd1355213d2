"""Networks shared by the agents: MLP, conditioned policy heads, ensemble critic.

Parameter names follow the official DROL and FQL code, so checkpoints move both ways: a policy
head keeps its layers under ``mlp/Dense_i`` and the critic under ``value_net/Dense_i`` and
``value_net/LayerNorm_i`` with the ensemble on the leading axis of every array.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp


def default_init(scale: float = 1.0):
    """Variance-scaling init (fan_avg, uniform), the kernel init FQL uses everywhere."""
    return nn.initializers.variance_scaling(scale, 'fan_avg', 'uniform')


class MLP(nn.Module):
    """Dense layers with GELU; optional LayerNorm after each hidden activation.

    ``hidden_dims`` lists every layer's width including the output layer; the output layer has
    no activation and no LayerNorm.
    """

    hidden_dims: Sequence[int]
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Apply the network to the last axis of ``x``."""
        for i, width in enumerate(self.hidden_dims):
            x = nn.Dense(width, kernel_init=default_init())(x)
            if i < len(self.hidden_dims) - 1:
                x = nn.gelu(x)
                if self.layer_norm:
                    x = nn.LayerNorm()(x)
        return x


class ConditionedPolicy(nn.Module):
    """An MLP on ``concat(observations, *conditions)`` with a linear ``output_dim`` head.

    Serves as DROL's actor ``pi(s, z)``, FQL's one-step policy ``mu(s, z)`` and FQL's flow
    vector field ``v(s, x_t, t)``: all three are "state plus conditioning vectors in, action
    out". The output is unbounded; callers clip actions to [-1, 1].
    """

    hidden_dims: Sequence[int]
    output_dim: int
    layer_norm: bool = False

    @nn.compact
    def __call__(self, observations: jnp.ndarray, *conditions: jnp.ndarray) -> jnp.ndarray:
        """Map states and conditioning vectors (same leading shape) to outputs."""
        x = jnp.concatenate([observations, *conditions], axis=-1)
        return MLP((*self.hidden_dims, self.output_dim), layer_norm=self.layer_norm, name='mlp')(x)


class EnsembleCritic(nn.Module):
    """``num_ensembles`` independent Q-networks on ``concat(s, a)``; output (E, ...)."""

    hidden_dims: Sequence[int]
    layer_norm: bool = True
    num_ensembles: int = 2

    @nn.compact
    def __call__(self, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        """Q-values with the ensemble on the leading axis, shape (E, *batch)."""
        ensemble = nn.vmap(
            MLP,
            variable_axes={'params': 0},
            split_rngs={'params': True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_ensembles,
        )
        x = jnp.concatenate([observations, actions], axis=-1)
        value_net = ensemble((*self.hidden_dims, 1), layer_norm=self.layer_norm, name='value_net')
        return value_net(x)[..., 0]


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
