"""DROL with a learned routing score (resilient MCL) and an optional learned routing metric.

A score head ``s(s, z)`` (``ScoreHead``, an MLP on ``concat(s, z)`` with one output) learns
which of a state's K latents wins DROL's routing, by a cross-entropy against the winner index:
``score_loss = -mean_i log softmax_k s(s_i, z_ik) [k*_i]`` (resilient MCL's hypothesis scores,
Letzelter et al. 2023). Its softmax estimates the probability that a latent's candidate is the
one nearest to the data, the data's mass in that candidate's routing cell. The loss reaches
only the score head: its inputs are states and latents, its target an index.

At test time, with ``inference_best_of_n``, the candidate of N latents with the highest
``agg Q(s, c) + score_beta * log softmax_N s(s, z)`` is taken (``inference_q_agg``; ``score_beta``
is in the critic's units); with ``inference_use_density_filter`` only DROL's densest
``inference_dense_topk`` candidates are eligible. Without best-of-N the policy is DROL's single
pass, and the score is trained but not used.

``routing_metric=True`` replaces DROL's routing distance by a learned diagonal metric:
``D^M_ik = mean_j (c_ikj - a_ij)^2 / sigma_j^2``, with ``log sigma_j^2`` fitted as the maximum-
likelihood (Gaussian) variance of the winners' residuals in each action dimension (its own loss,
on that vector only; the routing sees it as a constant). Only who wins changes: the BC pull and
the Q push stay DROL's, on the winner. Dimensions the winners fit poorly then weigh less when
the winner is chosen.

Reduction to DROL: with ``score_beta = 0`` and ``routing_metric=False`` the actor and critic
losses, their gradients on DROL's parameters and the actions are DROL's; the score head's loss
is added to the total and has its own parameters.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from agents import drol
from drol_jax.hyperparameters import at_least, one_of
from drol_jax.networks import MLP, aggregate_ensemble, broadcast_states, default_init


def get_config():
    """DROL's defaults plus the score head, its test-time weight and the routing metric."""
    config = drol.get_config()
    config.agent_name = 'drol_score'
    config.score_hidden_dims = (256, 256)
    config.score_coef = 1.0  # Weight of the score head's cross-entropy in the total loss.
    config.score_beta = 0.1  # Weight of log score beside Q when best-of-N ranks the candidates.
    config.routing_metric = False  # Route with the learned diagonal metric instead of D.
    return config


HYPERPARAMETER_CHECKS = {
    **drol.HYPERPARAMETER_CHECKS,
    'score_coef': at_least(0),
    'score_beta': at_least(0),
    'routing_metric': one_of(True, False),
}
PROGRESS_METRICS = ('critic/critic_loss', 'actor/bc_loss', 'actor/score_accuracy')
# DROL's published per-task settings apply unchanged (the variant's own values are not tuned).
PUBLISHED_SETTINGS = drol.PUBLISHED_SETTINGS
PRESET_LABELS = {'paper': 'DROL-score(16)', 'paper-tuned': 'DROL-score*'}


# ---------------------------------------------------------------------------------------------
# Pure helpers: the metric's distances and fit, the score's loss, the loss of given winners.


def metric_distances(candidates: jax.Array, actions: jax.Array, log_variance: jax.Array):
    """``mean_j (c_ikj - a_ij)^2 * exp(-log_variance_j)``, shape (N, K)."""
    return jnp.mean((candidates - actions[:, None, :]) ** 2 * jnp.exp(-log_variance), axis=-1)


def metric_fit_loss(residuals: jax.Array, log_variance: jax.Array) -> jax.Array:
    """Gaussian negative log-likelihood (up to constants) of residuals ``(N, d)``, mean over j.

    Minimised at ``log_variance_j = log mean_i residuals_ij^2``.
    """
    return jnp.mean(jnp.mean(residuals**2, axis=0) * jnp.exp(-log_variance) + log_variance)


def score_cross_entropy(logits: jax.Array, winners: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(cross-entropy, accuracy)`` of per-state logits ``(N, K)`` against the winners ``(N,)``."""
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, winners).mean()
    return loss, jnp.mean(jnp.argmax(logits, axis=-1) == winners)


def loss_of_winners(policy, q_values, latents, actions, candidates, distances, winners, settings):
    """DROL's actor loss with the winners given, and DROL's diagnostics of this routing.

    ``drol.routed_actor_loss`` on each state's winning latent alone (one candidate, so it wins)
    is DROL's learning pass on those winners; the routing diagnostics are then those of the
    full pass (``candidates``, Euclidean ``distances``, ``winners``).
    """
    winner_latents = jnp.take_along_axis(latents, winners[:, None, None], axis=1)
    loss, info = drol.routed_actor_loss(policy, q_values, winner_latents, actions, **settings)
    return loss, {**info, **drol.routing_diagnostics(candidates, distances, winners)}


class ScoreHead(nn.Module):
    """``s(s, z)``: an MLP on ``concat(s, z)`` and a linear output without bias.

    A softmax over a state's latents ignores a shift shared by all of them, so a bias would get
    an exactly-zero gradient, and Adam would turn the rounding noise in it into full steps.
    """

    hidden_dims: tuple[int, ...]

    @nn.compact
    def __call__(self, observations: jax.Array, latents: jax.Array) -> jax.Array:
        """One logit per (state, latent), shape ``observations.shape[:-1]``."""
        x = jnp.concatenate([observations, latents], axis=-1)
        x = MLP(self.hidden_dims, activate_final=True, name='mlp')(x)
        return nn.Dense(1, use_bias=False, kernel_init=default_init(), name='logit')(x)[..., 0]


class DiagonalMetric(nn.Module):
    """The routing metric's log-variances, one per action dimension (initially 0: Euclidean)."""

    dim: int

    @nn.compact
    def __call__(self, *unused_inputs) -> jax.Array:
        """The log-variances; the example inputs every module is initialised with are unused."""
        return self.param('log_variance', nn.initializers.zeros, (self.dim,))


# ---------------------------------------------------------------------------------------------
# The agent.


class DROLScoreAgent(drol.DROLAgent):
    """DROL plus a routing score head (and optionally a learned routing metric)."""

    def scores(self, observations, latents, params=None):
        """Score logits of latents ``(..., n, d)`` at their states ``(..., obs)``: ``(..., n)``."""
        tiled = broadcast_states(observations, latents.shape[-2])
        return self.network.select('routing_score')(tiled, latents, params=params)

    def routed_loss(self, batch, grad_params, latents):
        """DROL's routed loss (winners by the metric if learned), plus the score head's loss."""
        observations, actions = batch['observations'], batch['actions']
        policy, q_values = self.actor_loss_networks(observations, grad_params)
        candidates, distances, winners = drol.routing_pass(policy, latents, actions)
        extra, info = 0.0, {}
        if self.config['routing_metric']:
            log_variance = self.network.select('routing_metric')(params=grad_params)
            winners = drol.route_to_nearest(
                metric_distances(candidates, actions, jax.lax.stop_gradient(log_variance))
            )
            residuals = jnp.take_along_axis(candidates, winners[:, None, None], 1)[:, 0] - actions
            extra = metric_fit_loss(residuals, log_variance)
            info['metric_loss'] = extra
            info['metric_weight_spread'] = log_variance.max() - log_variance.min()
        loss, drol_info = loss_of_winners(
            policy,
            q_values,
            latents,
            actions,
            candidates,
            distances,
            winners,
            drol.actor_loss_settings(self.config),
        )
        score_loss, accuracy = score_cross_entropy(
            self.scores(observations, latents, params=grad_params), winners
        )
        total = loss + self.config['score_coef'] * score_loss + extra
        return total, {**drol_info, **info, 'score_loss': score_loss, 'score_accuracy': accuracy}

    @jax.jit
    def sample_actions(self, observations, seed=None, temperature=1.0):
        """DROL's actions; best-of-N ranks by ``Q + score_beta * log score`` when beta > 0."""
        config = self.config
        num = config['inference_num_samples']
        if not config['inference_best_of_n'] or num <= 1 or config['score_beta'] == 0:
            return drol.DROLAgent.sample_actions(self, observations, seed, temperature)
        seed = self.rng if seed is None else seed
        latents = drol.sample_ball_prior(
            seed, (*observations.shape[:-1], num), config['action_dim']
        )
        candidates = self.policy(broadcast_states(observations, num), latents)
        q = aggregate_ensemble(
            self.network.select('critic')(broadcast_states(observations, num), candidates),
            config['inference_q_agg'],
        )
        rank = q + config['score_beta'] * jax.nn.log_softmax(
            self.scores(observations, latents), axis=-1
        )
        if config['inference_use_density_filter']:
            dense = drol.densest(candidates, config['inference_dense_topk'])
            # Eligible: the candidates DROL's filter keeps (equal values are the same action).
            kept = jnp.any(jnp.all(candidates[..., :, None, :] == dense[..., None, :, :], -1), -1)
            rank = jnp.where(kept, rank, -jnp.inf)
        best = jnp.argmax(rank, axis=-1)
        return jnp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]

    @staticmethod
    def networks(config, action_dim: int) -> dict[str, nn.Module]:
        """DROL's networks, the score head and, with ``routing_metric``, the metric."""
        modules = drol.DROLAgent.networks(config, action_dim)
        modules['routing_score'] = ScoreHead(tuple(config['score_hidden_dims']))
        if config['routing_metric']:
            modules['routing_metric'] = DiagonalMetric(action_dim)
        return modules
