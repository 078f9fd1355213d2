"""DROL with a region-level support penalty on all K candidates (SPOT-like, adapted).

DROL pulls only the winners, so a candidate that lies off the data's support and never wins
gets no gradient at all and stays where it is. This variant adds a penalty on every candidate,
winner or not, for its distance to the data's support, estimated from the batch (a 1-nearest-
neighbour support in joint state-action space, in the spirit of SPOT's support constraint, Wu et
al. 2022, with a nearest-neighbour distance in place of SPOT's VAE density):

- ``d(c_ik) = min_j [D(c_ik, a_j) + support_state_weight * S_ij]`` over the batch's pairs
  ``(s_j, a_j)``, with ``D`` DROL's per-dimension squared distance and ``S_ij`` the per-dimension
  squared distance between the states;
- ``rho = mean_i min_{j != i} [D(a_i, a_j) + support_state_weight * S_ij]``: how far the data's
  own points are from each other at this batch size, so the threshold adapts to the task;
- ``support_loss = mean_ik max(0, d(c_ik) - support_margin * rho)``, and the actor loss is
  DROL's plus ``support_coef * support_loss``.

A candidate as close to the data as the data is to itself pays nothing; one in a gap is pulled
to the nearest supported action of a similar state. The thresholds see no gradient.

Reduction to DROL: ``support_coef = 0`` gives DROL's loss and gradients exactly.

Cost: the penalty needs all N*K candidates with gradients (one more actor pass and its backward
on N*K inputs) and an (N*K) x N distance matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from agents import drol
from drol_jax.hyperparameters import at_least


def get_config():
    """DROL's defaults plus the support penalty's weight, threshold and state weight."""
    config = drol.get_config()
    config.agent_name = 'drol_support'
    config.support_coef = 1.0  # Weight of the support penalty beside DROL's bc_coef * bc_loss.
    config.support_margin = 1.0  # The threshold, in units of the data's own 1-NN distance rho.
    config.support_state_weight = 1.0  # Weight of state distance in the joint distance.
    return config


HYPERPARAMETER_CHECKS = {
    **drol.HYPERPARAMETER_CHECKS,
    'support_coef': at_least(0),
    'support_margin': at_least(0),
    'support_state_weight': at_least(0),
}
PROGRESS_METRICS = ('critic/critic_loss', 'actor/bc_loss', 'actor/outside_support')
# DROL's published per-task settings apply unchanged (the variant's own values are not tuned).
PUBLISHED_SETTINGS = drol.PUBLISHED_SETTINGS
PRESET_LABELS = {'paper': 'DROL-support(16)', 'paper-tuned': 'DROL-support*'}


# ---------------------------------------------------------------------------------------------
# Pure helpers.


def pairwise_sq_distances(x: jax.Array, y: jax.Array) -> jax.Array:
    """Per-dimension mean squared distance of every row of ``x (..., d)`` to every row of ``y``.

    ``(..., d), (M, d) -> (..., M)``, through ``|x|^2 - 2 x.y + |y|^2`` (one matrix product;
    clipped at 0 against rounding).
    """
    cross = jnp.einsum('...d,md->...m', x, y)
    squares = jnp.sum(x**2, axis=-1)[..., None] + jnp.sum(y**2, axis=-1)
    return jnp.maximum(squares - 2.0 * cross, 0.0) / x.shape[-1]


def support_penalty(
    candidates: jax.Array,
    observations: jax.Array,
    actions: jax.Array,
    *,
    state_weight: float,
    margin: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The hinge on every candidate's distance to the batch's support; see the module docstring.

    Args:
        candidates: ``(N, K, d)`` clipped candidates, with gradients.
        observations: ``(N, obs)`` the batch's states.
        actions: ``(N, d)`` the batch's dataset actions.
        state_weight: weight of the state distance in the joint distance.
        margin: the threshold in units of the data's own nearest-neighbour distance.

    Returns:
        The penalty and its diagnostics.
    """
    state_distances = state_weight * pairwise_sq_distances(observations, observations)  # (N, N)
    support = jnp.min(
        pairwise_sq_distances(candidates, actions) + state_distances[:, None, :], axis=-1
    )
    data = pairwise_sq_distances(actions, actions) + state_distances
    own_scale = jnp.mean(jnp.min(jnp.where(jnp.eye(len(actions), dtype=bool), jnp.inf, data), -1))
    threshold = jax.lax.stop_gradient(margin * own_scale)
    excess = jnp.maximum(support - threshold, 0.0)
    return excess.mean(), {
        'support_loss': excess.mean(),
        'support_threshold': threshold,
        'outside_support': jnp.mean(excess > 0),
    }


# ---------------------------------------------------------------------------------------------
# The agent.


class DROLSupportAgent(drol.DROLAgent):
    """DROL plus the support penalty on all K candidates; the rest is DROL's."""

    def routed_loss(self, batch, grad_params, latents):
        """DROL's routed loss plus ``support_coef`` times the support penalty."""
        observations, actions = batch['observations'], batch['actions']
        policy, q_values = self.actor_loss_networks(observations, grad_params)
        loss, info = drol.routed_actor_loss(
            policy, q_values, latents, actions, **drol.actor_loss_settings(self.config)
        )
        candidates = jnp.clip(jax.vmap(policy, in_axes=1, out_axes=1)(latents), -1, 1)
        penalty, penalty_info = support_penalty(
            candidates,
            observations,
            actions,
            state_weight=self.config['support_state_weight'],
            margin=self.config['support_margin'],
        )
        return loss + self.config['support_coef'] * penalty, {**info, **penalty_info}
