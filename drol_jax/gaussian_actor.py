"""A diagonal Gaussian policy with the official code's Gaussian-actor options and parameter names.

Its parameters sit under ``actor_net/...`` (the trunk), ``mean_net`` and ``log_std_net`` (or
``log_stds``), so checkpoints move both ways. It is kept apart from ``drol_jax.networks`` because
distrax imports TensorFlow Probability (about a second at start-up), which agents without a
Gaussian policy need not pay.
"""

from __future__ import annotations

from collections.abc import Sequence

import distrax
import flax.linen as nn
import jax.numpy as jnp

from drol_jax.networks import MLP, default_init


class TanhSquashed(distrax.Transformed):
    """A distribution pushed through ``tanh`` (per dimension), with the squashed mean as mode."""

    def __init__(self, distribution: distrax.Distribution):
        super().__init__(distribution, distrax.Block(distrax.Tanh(), ndims=1))

    def mode(self) -> jnp.ndarray:
        """``tanh`` of the underlying distribution's mode (the deterministic action)."""
        return self.bijector.forward(self.distribution.mode())


class GaussianActor(nn.Module):
    """A diagonal Gaussian policy ``pi(a | s)``, optionally tanh-squashed into (-1, 1).

    The log standard deviation is zero (``const_std``), a learned vector (``log_stds``), or a
    second head on the trunk (``state_dependent_std``); it is clipped to
    ``[log_std_min, log_std_max]``. ``temperature`` scales the standard deviation, so 0 makes
    every sample the mean (the deterministic action evaluation uses). The mean head (and the
    log-std head) start with a kernel init of scale ``final_fc_init_scale``.
    """

    hidden_dims: Sequence[int]
    action_dim: int
    layer_norm: bool = False
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    tanh_squash: bool = False
    state_dependent_std: bool = False
    const_std: bool = True
    final_fc_init_scale: float = 1e-2
    encoder: nn.Module | None = None

    @nn.compact
    def __call__(self, observations: jnp.ndarray, temperature: float = 1.0):
        """The action distribution at each observation (a ``distrax`` distribution)."""
        inputs = observations if self.encoder is None else self.encoder(observations)
        features = MLP(
            self.hidden_dims, layer_norm=self.layer_norm, activate_final=True, name='actor_net'
        )(inputs)
        head_init = default_init(self.final_fc_init_scale)
        means = nn.Dense(self.action_dim, kernel_init=head_init, name='mean_net')(features)
        if self.state_dependent_std:
            log_stds = nn.Dense(self.action_dim, kernel_init=head_init, name='log_std_net')(
                features
            )
        elif self.const_std:
            log_stds = jnp.zeros_like(means)
        else:
            log_stds = self.param('log_stds', nn.initializers.zeros, (self.action_dim,))
        log_stds = jnp.clip(log_stds, self.log_std_min, self.log_std_max)
        distribution = distrax.MultivariateNormalDiag(
            loc=means, scale_diag=jnp.exp(log_stds) * temperature
        )
        return TanhSquashed(distribution) if self.tanh_squash else distribution


def gaussian_std(distribution) -> jnp.ndarray:
    """Standard deviations of a ``GaussianActor`` distribution (before any tanh squash)."""
    if isinstance(distribution, TanhSquashed):
        distribution = distribution.distribution
    return distribution.stddev()
