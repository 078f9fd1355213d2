"""DROL with an adaptive candidate budget: each state uses only the candidates it needs.

Candidates are drawn up to ``num_candidates`` (K_max) per state, in order. A state uses the
first ``n_i`` of them: the fewest (at least ``min_candidates``) whose nearest one covers its
dataset action within ``coverage_epsilon`` (DROL's per-dimension squared distance), or all K_max
when none does. Its winner is the nearest of those ``n_i``; the loss on the winners is DROL's.
The budget is a mask over a static K_max, so shapes stay fixed under jit.

``candidates_used`` (logged) is the mean of ``n_i / K_max``: the share of the routing pass that
an implementation drawing candidates in order, and stopping at coverage, would compute. This one
computes all K_max (a batch's states stop at different points, and a static shape cannot
shrink), so the saving is the measured potential, not time saved here.

Because the latents are fresh at every update, "the first n_i" is a random subset: a state
that is already covered routes to a candidate within ``coverage_epsilon`` of its action rather
than to the nearest one, and leaves the remaining candidates free.

Reduction to DROL: ``coverage_epsilon = 0`` (with K_max = DROL's K) is DROL's routing, loss and
gradients exactly: only an exact match covers an action, and it is then DROL's winner too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from agents import drol
from drol_jax.hyperparameters import at_least, integer_at_least


def get_config():
    """DROL's defaults plus the coverage radius and the smallest budget."""
    config = drol.get_config()
    config.agent_name = 'drol_budget'
    config.coverage_epsilon = 0.005  # Covered: a candidate with D_ik <= this (K_max: K).
    config.min_candidates = 1  # Every state uses at least this many candidates.
    return config


HYPERPARAMETER_CHECKS = {
    **drol.HYPERPARAMETER_CHECKS,
    'coverage_epsilon': at_least(0),
    'min_candidates': integer_at_least(1),
}
PROGRESS_METRICS = ('critic/critic_loss', 'actor/bc_loss', 'actor/candidates_used')
# DROL's published per-task settings apply unchanged (the variant's own values are not tuned).
PUBLISHED_SETTINGS = drol.PUBLISHED_SETTINGS
PRESET_LABELS = {'paper': 'DROL-budget(16)', 'paper-tuned': 'DROL-budget*'}


# ---------------------------------------------------------------------------------------------
# Pure helpers.


def coverage_budget(distances: jax.Array, epsilon: float, min_candidates: int) -> jax.Array:
    """Candidates each state uses, ``(N,)``: the first ``n`` that cover its action within eps.

    ``n_i`` is one past the first candidate with ``D_ik <= epsilon`` (K when there is none),
    and at least ``min_candidates`` (at most K).
    """
    num = distances.shape[-1]
    covered = distances <= epsilon
    needed = jnp.where(covered.any(axis=-1), jnp.argmax(covered, axis=-1) + 1, num)
    return jnp.clip(needed, min(min_candidates, num), num)


def route_within_budget(distances: jax.Array, budget: jax.Array) -> jax.Array:
    """The nearest of each state's first ``budget_i`` candidates, ``(N,)`` (ties: lowest index)."""
    used = jnp.arange(distances.shape[-1])[None, :] < budget[:, None]
    return drol.route_to_nearest(jnp.where(used, distances, jnp.inf))


def budget_actor_loss(
    policy,
    q_values,
    latents: jax.Array,
    actions: jax.Array,
    *,
    coverage_epsilon: float,
    min_candidates: int,
    **settings,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DROL's actor loss with each state's winner chosen within its candidate budget.

    ``settings``: DROL's bc_coef, q_coef, actor_q_agg, normalize_q_loss. The winners' loss is
    ``drol.routed_actor_loss`` on each state's winning latent alone (one candidate, so it wins:
    DROL's learning pass on those winners); the diagnostics are those of the full pass.
    """
    candidates, distances, _ = drol.routing_pass(policy, latents, actions)
    budget = coverage_budget(distances, coverage_epsilon, min_candidates)
    winners = route_within_budget(distances, budget)
    winner_latents = jnp.take_along_axis(latents, winners[:, None, None], axis=1)
    loss, info = drol.routed_actor_loss(policy, q_values, winner_latents, actions, **settings)
    return loss, {
        **info,
        **drol.routing_diagnostics(candidates, distances, winners),
        'candidates_used': jnp.mean(budget / distances.shape[-1]),
    }


# ---------------------------------------------------------------------------------------------
# The agent.


class DROLBudgetAgent(drol.DROLAgent):
    """DROL whose states route within their own candidate budgets; the rest is DROL's."""

    def routed_loss(self, batch, grad_params, latents):
        """Budgeted routing on the K_max latents per state."""
        policy, q_values = self.actor_loss_networks(batch['observations'], grad_params)
        return budget_actor_loss(
            policy,
            q_values,
            latents,
            batch['actions'],
            coverage_epsilon=self.config['coverage_epsilon'],
            min_candidates=self.config['min_candidates'],
            **drol.actor_loss_settings(self.config),
        )
