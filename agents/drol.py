"""DROL: Dynamic Routing for Offline RL (Mu, Zhao, Zhong, Zhang, 2026).

A one-step actor ``a = pi(s, z)`` with a latent ``z`` drawn uniformly from the d-ball of radius
sqrt(d). Each training state gets K candidate actions (one per latent); each dataset action is
routed to its nearest candidate, and only that winner receives the behaviour-cloning pull and the
critic's push. Routing is recomputed at every gradient step. At test time: one latent, one pass.

The loss is computed the efficient way: a gradient-free pass over all K candidates picks the
winners, then only the N winners are recomputed with gradients, so the critic and the actor's
backward pass run on N inputs instead of N*K. Because only the winner enters the loss, this has
the same value and gradient as differentiating through all N*K candidates (tests check this).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from drol_jax.networks import ConditionedPolicy, EnsembleCritic, aggregate_ensemble
from drol_jax.train_state import (
    ModuleDict,
    TrainState,
    actor_critic_loss,
    actor_critic_update,
    nonpytree_field,
)


def get_config() -> ml_collections.ConfigDict:
    """DROL defaults (SPEC 1.6); per-task values are set with ``--agent.<name>=...``."""
    return ml_collections.ConfigDict(
        dict(
            agent_name='drol',
            lr=3e-4,
            batch_size=256,
            actor_hidden_dims=(512, 512, 512, 512),
            value_hidden_dims=(512, 512, 512, 512),
            layer_norm=True,  # Critic LayerNorm.
            actor_layer_norm=False,
            discount=0.99,
            tau=0.005,
            q_agg='mean',  # Ensemble aggregation in the TD target: 'mean' or 'min'.
            actor_q_agg='min',  # Ensemble aggregation in the actor's Q term.
            num_candidates=16,  # K: candidates per state for routing.
            critic_num_candidates=1,  # Next-state candidates for the TD target (best kept).
            bc_coef=1.0,
            q_coef=1.0,
            normalize_q_loss=True,
            inference_num_candidates=1,  # Best-of-N at test time; 1 means a single pass.
        )
    )


# ---------------------------------------------------------------------------------------------
# Pure helpers: the prior and routing.


def sample_ball_prior(rng: jax.Array, shape: tuple[int, ...], dim: int) -> jax.Array:
    """Latents uniform in the ``dim``-ball of radius sqrt(dim), shape ``(*shape, dim)``.

    ``z = sqrt(d) * u**(1/d) * g/|g|`` with ``g ~ N(0, I)``, ``u ~ U(0, 1)``: a uniform direction
    times a radius whose distribution makes the density uniform in volume.
    """
    direction_rng, radius_rng = jax.random.split(rng)
    g = jax.random.normal(direction_rng, (*shape, dim))
    u = jax.random.uniform(radius_rng, (*shape, 1))
    return jnp.sqrt(dim) * u ** (1.0 / dim) * g / jnp.linalg.norm(g, axis=-1, keepdims=True)


def candidate_distances(candidates: jax.Array, actions: jax.Array) -> jax.Array:
    """Per-dimension mean squared distance ``D_ik = |c_ik - a_i|^2 / d``, shape (N, K)."""
    return jnp.mean((candidates - actions[:, None, :]) ** 2, axis=-1)


def route_to_nearest(distances: jax.Array) -> jax.Array:
    """Index of the nearest candidate per state, shape (N,); ties go to the lowest index."""
    return jnp.argmin(distances, axis=-1)


def routing_balance(winners: jax.Array, num_candidates: int) -> dict[str, jax.Array]:
    """Entropy and largest share of the winner-index histogram over the batch.

    A uniform histogram (entropy log K) means every candidate owns part of the data; a max share
    near 1 means one candidate wins almost everything (collapse).
    """
    share = jnp.bincount(winners, length=num_candidates) / winners.shape[0]
    entropy = -jnp.sum(jnp.where(share > 0, share * jnp.log(jnp.where(share > 0, share, 1.0)), 0))
    return {'winner_entropy': entropy, 'winner_max_share': share.max()}


def candidate_spread(candidates: jax.Array) -> jax.Array:
    """Mean pairwise per-dimension squared distance between a state's candidates (0 for K=1).

    Uses ``mean_{k != l} |c_k - c_l|^2 = 2 K/(K-1) * mean_k |c_k - mean(c)|^2`` to avoid the
    K x K pairwise tensor.
    """
    num_candidates = candidates.shape[1]
    if num_candidates < 2:
        return jnp.zeros(())
    deviation = candidates - candidates.mean(axis=1, keepdims=True)
    per_state = jnp.mean(deviation**2, axis=(1, 2)) * 2 * num_candidates / (num_candidates - 1)
    return per_state.mean()


def routed_actor_loss(
    policy: Callable[[jax.Array], jax.Array],
    q_values: Callable[[jax.Array], jax.Array],
    latents: jax.Array,
    actions: jax.Array,
    *,
    bc_coef: float,
    q_coef: float,
    actor_q_agg: str,
    normalize_q_loss: bool,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DROL's actor loss (SPEC 1.2), winners recomputed with gradients.

    Args:
        policy: raw actor output for one latent per state, ``(N, d) -> (N, d)`` (closes over the
            states and the parameters being differentiated).
        q_values: ensemble Q-values of one action per state, ``(N, d) -> (E, N)``; must carry no
            gradient to the critic (the caller stops it).
        latents: ``(N, K, d)`` prior samples, K per state.
        actions: ``(N, d)`` dataset actions.
        bc_coef: weight of the routed BC term.
        q_coef: weight of the Q term.
        actor_q_agg: ensemble reduction of the winner's Q-values ('min' or 'mean').
        normalize_q_loss: divide the Q term by the (gradient-free) mean |Q| of the batch.

    Returns:
        The loss and its diagnostics.
    """
    num_candidates = latents.shape[1]
    # Routing pass: all K candidates, one vmapped actor call, no gradient (argmin has none).
    candidates = jnp.clip(jax.vmap(policy, in_axes=1, out_axes=1)(latents), -1, 1)
    candidates = jax.lax.stop_gradient(candidates)
    distances = candidate_distances(candidates, actions)
    winners = route_to_nearest(distances)

    # Learning pass: recompute only the winners, with gradients.
    winner_latents = jnp.take_along_axis(latents, winners[:, None, None], axis=1)[:, 0]
    winner_actions = jnp.clip(policy(winner_latents), -1, 1)
    bc_loss = jnp.mean((winner_actions - actions) ** 2)

    q = aggregate_ensemble(q_values(winner_actions), actor_q_agg)
    q_loss = -q.mean()
    if normalize_q_loss:
        q_loss = q_loss * jax.lax.stop_gradient(1.0 / jnp.maximum(jnp.abs(q).mean(), 1e-6))
    actor_loss = bc_coef * bc_loss + q_coef * q_loss

    info = {
        'actor_loss': actor_loss,
        'bc_loss': bc_loss,
        'q_loss': q_loss,
        'q': q.mean(),
        'min_distance': distances.min(axis=-1).mean(),
        'single_sample_mse': distances[:, 0].mean(),
        'candidate_spread': candidate_spread(candidates),
        **routing_balance(winners, num_candidates),
    }
    return actor_loss, info


# ---------------------------------------------------------------------------------------------
# The agent.


class DROLAgent(flax.struct.PyTreeNode):
    """DROL behind the agent interface of FQL: create, update, total_loss, sample_actions."""

    rng: jax.Array
    network: TrainState
    config: Any = nonpytree_field()

    def critic_loss(self, batch, grad_params, rng):
        """TD loss of the critic ensemble (SPEC 1.3)."""
        frozen = jax.lax.stop_gradient(grad_params)
        next_observations = batch['next_observations']
        num_next = self.config['critic_num_candidates']
        latents = sample_ball_prior(
            rng, (*next_observations.shape[:-1], num_next), self.config['action_dim']
        )
        tiled_next = jnp.broadcast_to(
            next_observations[..., None, :], (*latents.shape[:-1], next_observations.shape[-1])
        )
        next_actions = jnp.clip(
            self.network.select('actor')(tiled_next, latents, params=frozen), -1, 1
        )
        next_q = self.network.select('target_critic')(tiled_next, next_actions)  # (E, N, C)
        # With several next candidates, keep the one with the highest pessimistic target Q.
        best = jnp.argmax(next_q.min(axis=0), axis=-1)
        next_q = jnp.take_along_axis(next_q, best[None, :, None], axis=-1)[..., 0]
        next_q = aggregate_ensemble(next_q, self.config['q_agg'])
        target = batch['rewards'] + self.config['discount'] * batch['masks'] * next_q

        q = self.network.select('critic')(
            batch['observations'], batch['actions'], params=grad_params
        )
        critic_loss = jnp.mean((q - target) ** 2)
        return critic_loss, {
            'critic_loss': critic_loss,
            'q_mean': q.mean(),
            'q_max': q.max(),
            'q_min': q.min(),
            'target_mean': target.mean(),
        }

    def actor_loss(self, batch, grad_params, rng):
        """Routed BC + winner Q loss (SPEC 1.2); the critic gets no gradient from it."""
        observations, actions = batch['observations'], batch['actions']
        latents = sample_ball_prior(
            rng, (actions.shape[0], self.config['num_candidates']), self.config['action_dim']
        )
        frozen = jax.lax.stop_gradient(grad_params)
        return routed_actor_loss(
            policy=lambda z: self.network.select('actor')(observations, z, params=grad_params),
            q_values=lambda a: self.network.select('critic')(observations, a, params=frozen),
            latents=latents,
            actions=actions,
            bc_coef=self.config['bc_coef'],
            q_coef=self.config['q_coef'],
            actor_q_agg=self.config['actor_q_agg'],
            normalize_q_loss=self.config['normalize_q_loss'],
        )

    @jax.jit
    def total_loss(self, batch, grad_params, rng=None):
        """Critic loss + actor loss, with ``critic/...`` and ``actor/...`` diagnostics."""
        return actor_critic_loss(self, batch, grad_params, self.rng if rng is None else rng)

    @jax.jit
    def update(self, batch):
        """One gradient step on all parameters, then the target-critic EMA."""
        return actor_critic_update(self, batch)

    @jax.jit
    def sample_actions(self, observations, seed=None, temperature=1.0):
        """``clip(pi(s, z))`` with one latent per state; best-of-N if configured (SPEC 1.4).

        ``temperature`` scales the latent (0 gives the actor's output at the ball's centre).
        """
        seed = self.rng if seed is None else seed
        num = self.config['inference_num_candidates']
        batch_shape = observations.shape[:-1]
        if num == 1:
            latents = temperature * sample_ball_prior(seed, batch_shape, self.config['action_dim'])
            return jnp.clip(self.network.select('actor')(observations, latents), -1, 1)
        latents = temperature * sample_ball_prior(
            seed, (*batch_shape, num), self.config['action_dim']
        )
        tiled = jnp.broadcast_to(
            observations[..., None, :], (*latents.shape[:-1], observations.shape[-1])
        )
        candidates = jnp.clip(self.network.select('actor')(tiled, latents), -1, 1)
        q = aggregate_ensemble(
            self.network.select('critic')(tiled, candidates), self.config['actor_q_agg']
        )
        best = jnp.argmax(q, axis=-1)
        return jnp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """Initialise the actor, critic ensemble and target critic from example inputs."""
        rng, init_rng = jax.random.split(jax.random.PRNGKey(seed))
        action_dim = ex_actions.shape[-1]
        actor_def = ConditionedPolicy(
            config['actor_hidden_dims'], action_dim, layer_norm=config['actor_layer_norm']
        )
        critic_def = EnsembleCritic(config['value_hidden_dims'], layer_norm=config['layer_norm'])
        modules = {
            'actor': actor_def,
            'critic': critic_def,
            'target_critic': copy.deepcopy(critic_def),
        }
        # The actor's example latent has the action's shape.
        inputs = {name: (ex_observations, ex_actions) for name in modules}
        network_def = ModuleDict(modules)
        params = network_def.init(init_rng, **inputs)['params']
        params['modules_target_critic'] = params['modules_critic']
        network = TrainState.create(network_def, params, optax.adam(config['lr']))
        return cls(
            rng, network=network, config=flax.core.FrozenDict(**config, action_dim=action_dim)
        )
