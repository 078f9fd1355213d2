"""DROL with soft responsibilities: annealed softmin routing, or epsilon-WTA.

DROL gives the behaviour-cloning pull and the critic's push to the nearest of a state's K
candidates only (hard winner-takes-all). Here every candidate ``k`` of state ``i`` learns, with a
responsibility weight ``w_ik`` computed from the routing distances ``D_ik`` and treated as a
constant: no gradient flows through the weights, as in annealed multiple choice learning
(Perera et al. 2024).

- ``responsibility='softmin'`` (annealed MCL): ``w_i = softmax_k(-D_ik / T)``. The temperature
  falls exponentially from ``temperature_init`` towards ``temperature_final``:
  ``T(t) = T_final + (T_init - T_final) * 10 ** (-t / temperature_decade_steps)``, where ``t`` is
  the agent's update count (the train state's step, so the schedule holds inside fused blocks of
  updates and across resumes). ``T = 0`` gives the one-hot nearest candidate.
- ``responsibility='epsilon'`` (relaxed WTA, Rupprecht et al. 2017): the nearest candidate gets
  ``1 - epsilon``, each of the others ``epsilon / (K - 1)``.

Each candidate's loss is its responsibility times DROL's loss of a winner, both terms:
``bc_loss = mean_i sum_k w_ik D_ik``, ``q_i = sum_k w_ik agg_j Q_j(s_i, c_ik)`` (the ensemble
reduced per candidate by ``actor_q_agg``), and ``q_loss`` is DROL's on ``q_i``. The Q term thus
pushes every candidate in proportion to its responsibility, with the same weights as the pull.

Reduction to DROL: one-hot weights (``temperature_init = temperature_final = 0``, or
``responsibility='epsilon'`` with ``epsilon = 0``) give DROL's loss and gradients exactly (to
float32 rounding). With ``temperature_final = 0`` the routing becomes DROL's as ``T`` anneals.

Cost: every candidate gets gradients, so the actor's backward pass and the critic run on N*K
inputs instead of DROL's N winners (about the cost of DROL's naive formulation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from agents import drol
from drol_jax.hyperparameters import at_least, in_interval, one_of, positive
from drol_jax.networks import aggregate_ensemble


def get_config():
    """DROL's defaults plus the responsibilities and the temperature schedule."""
    config = drol.get_config()
    config.agent_name = 'drol_soft'
    config.responsibility = 'softmin'  # 'softmin' (annealed) or 'epsilon' (epsilon-WTA).
    config.temperature_init = 0.1  # T at update 0, in units of D (per-dimension squared distance).
    config.temperature_final = 0.0  # The value T falls towards; 0 ends in DROL's hard routing.
    config.temperature_decade_steps = 100_000  # Updates per tenfold fall of T - T_final.
    config.epsilon = 0.05  # epsilon-WTA: the share of the non-winners, together.
    return config


HYPERPARAMETER_CHECKS = {
    **drol.HYPERPARAMETER_CHECKS,
    'responsibility': one_of('softmin', 'epsilon'),
    'temperature_init': at_least(0),
    'temperature_final': at_least(0),
    'temperature_decade_steps': positive(),
    'epsilon': in_interval(0, 1),
}
PROGRESS_METRICS = ('critic/critic_loss', 'actor/bc_loss', 'actor/winner_weight')
# DROL's published per-task settings apply unchanged (the variant's own values are not tuned).
PUBLISHED_SETTINGS = drol.PUBLISHED_SETTINGS
PRESET_LABELS = {'paper': 'DROL-soft(16)', 'paper-tuned': 'DROL-soft*'}


# ---------------------------------------------------------------------------------------------
# Pure helpers: the schedule, the responsibilities, the weighted loss.


def temperature_at(step, temperature_init: float, temperature_final: float, decade_steps: float):
    """``T_final + (T_init - T_final) * 10 ** (-step / decade_steps)`` (float32)."""
    decay = 10.0 ** (-jnp.asarray(step, jnp.float32) / decade_steps)
    return temperature_final + (temperature_init - temperature_final) * decay


def nearest_one_hot(distances: jax.Array) -> jax.Array:
    """DROL's routing as weights: 1 on the nearest candidate of each state, 0 elsewhere."""
    num = distances.shape[-1]
    return jax.nn.one_hot(drol.route_to_nearest(distances), num, dtype=distances.dtype)


def softmin_responsibilities(distances: jax.Array, temperature) -> jax.Array:
    """``softmax_k(-D_ik / T)`` per state, shape (N, K); ``T = 0`` gives DROL's one-hot winner."""
    positive_t = temperature > 0
    # Shifting by the nearest distance keeps exp finite for small T; T = 0 would divide by zero
    # and takes the one-hot branch instead.
    shifted = distances - distances.min(axis=-1, keepdims=True)
    soft = jax.nn.softmax(-shifted / jnp.where(positive_t, temperature, 1.0), axis=-1)
    return jnp.where(positive_t, soft, nearest_one_hot(distances))


def epsilon_responsibilities(distances: jax.Array, epsilon: float) -> jax.Array:
    """epsilon-WTA: the nearest gets ``1 - epsilon``, the others ``epsilon / (K - 1)`` each.

    With one candidate it gets everything (there is nobody to share with).
    """
    hard = nearest_one_hot(distances)
    num = distances.shape[-1]
    if num == 1:
        return hard
    return hard * (1.0 - epsilon) + (1.0 - hard) * (epsilon / (num - 1))


def responsibility_entropy(weights: jax.Array) -> jax.Array:
    """Mean over states of the entropy of the responsibilities (0 for one-hot, log K uniform)."""
    logs = jnp.log(jnp.where(weights > 0, weights, 1.0))
    return -jnp.mean(jnp.sum(weights * logs, axis=-1))


def soft_routed_actor_loss(
    policy,
    q_values,
    latents: jax.Array,
    actions: jax.Array,
    responsibilities,
    *,
    bc_coef: float,
    q_coef: float,
    actor_q_agg: str,
    normalize_q_loss: bool,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DROL's actor loss with every candidate weighted by its (constant) responsibility.

    Args:
        policy: raw actor output for one latent per state, ``(N, d) -> (N, d)``, with gradients.
        q_values: ensemble Q-values of one action per state, ``(N, d) -> (E, N)``, no gradient
            to the critic.
        latents: ``(N, K, d)`` prior samples.
        actions: ``(N, d)`` dataset actions.
        responsibilities: routing distances ``(N, K)`` -> weights ``(N, K)``, each row summing
            to 1; it sees no gradient and its output is held constant.
        bc_coef: weight of the BC term.
        q_coef: weight of the Q term.
        actor_q_agg: ensemble reduction of each candidate's Q-values ('min' or 'mean').
        normalize_q_loss: divide the Q term by the (gradient-free) mean |q_i| of the batch.

    Returns:
        The loss and its diagnostics (DROL's, of the hard winners, plus the weights').
    """
    candidates = jnp.clip(jax.vmap(policy, in_axes=1, out_axes=1)(latents), -1, 1)
    distances = drol.candidate_distances(candidates, actions)
    routing = jax.lax.stop_gradient(distances)
    weights = jax.lax.stop_gradient(responsibilities(routing))
    bc_loss = jnp.mean(jnp.sum(weights * distances, axis=-1))
    # (E, N, K) -> (N, K): the ensemble is reduced per candidate, then weighted; q_term gets
    # that one row (its 'mean' over one row leaves it as it is).
    per_candidate = jax.vmap(q_values, in_axes=1, out_axes=2)(candidates)
    q_state = jnp.sum(weights * aggregate_ensemble(per_candidate, actor_q_agg), axis=-1)
    q_loss, q = drol.q_term(q_state[None], 'mean', normalize_q_loss)
    actor_loss = bc_coef * bc_loss + q_coef * q_loss
    winners = drol.route_to_nearest(routing)
    return actor_loss, {
        'actor_loss': actor_loss,
        'bc_loss': bc_loss,
        'q_loss': q_loss,
        'q': q.mean(),
        **drol.routing_diagnostics(jax.lax.stop_gradient(candidates), routing, winners),
        'winner_weight': jnp.take_along_axis(weights, winners[:, None], axis=1).mean(),
        'responsibility_entropy': responsibility_entropy(weights),
    }


# ---------------------------------------------------------------------------------------------
# The agent.


class DROLSoftAgent(drol.DROLAgent):
    """DROL whose actor loss weights every candidate by its responsibility; the rest is DROL's."""

    def temperature(self) -> jax.Array:
        """The softmin temperature at this update (from the train state's step)."""
        return temperature_at(
            self.network.step,
            self.config['temperature_init'],
            self.config['temperature_final'],
            self.config['temperature_decade_steps'],
        )

    def responsibilities(self, distances: jax.Array) -> jax.Array:
        """The configured responsibilities of the routing distances ``(N, K)``."""
        if self.config['responsibility'] == 'epsilon':
            return epsilon_responsibilities(distances, self.config['epsilon'])
        return softmin_responsibilities(distances, self.temperature())

    def routed_loss(self, batch, grad_params, latents):
        """Responsibility-weighted BC and Q terms over the K latents per state."""
        policy, q_values = self.actor_loss_networks(batch['observations'], grad_params)
        loss, info = soft_routed_actor_loss(
            policy,
            q_values,
            latents,
            batch['actions'],
            self.responsibilities,
            **drol.actor_loss_settings(self.config),
        )
        if self.config['responsibility'] == 'softmin':
            info['temperature'] = self.temperature()
        return loss, info
