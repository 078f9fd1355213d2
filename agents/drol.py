"""DROL: Dynamic Routing for Offline RL (Mu, Zhao, Zhong, Zhang, 2026).

A one-step actor ``a = pi(s, z)`` with a latent ``z`` drawn uniformly from the d-ball of radius
sqrt(d). Each training state gets K candidate actions (one per latent); each dataset action is
routed to its nearest candidate, and only that winner receives the behaviour-cloning pull and the
critic's push. Routing is recomputed at every gradient step. At test time: one latent, one pass.

The loss is computed the efficient way: a gradient-free pass over all K candidates picks the
winners, then only the N winners are recomputed with gradients, so the critic and the actor's
backward pass run on N inputs instead of N*K. Because only the winner enters the loss, this has
the same value and gradient as differentiating through all N*K candidates (tests check this).

Parameter trees match the official implementation (``modules_actor_onestep_flow``,
``modules_critic``, ``modules_target_critic``), so its ``params_<step>.pkl`` files restore here.
"""

from __future__ import annotations

import copy
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from drol_jax.hyperparameters import at_least, in_interval, integer_at_least, one_of, positive
from drol_jax.losses import prefixed, td_loss
from drol_jax.networks import (
    ConditionedPolicy,
    EnsembleCritic,
    aggregate_ensemble,
    broadcast_states,
)
from drol_jax.train_state import ModuleDict, TrainState, nonpytree_field, target_update


def get_config() -> ml_collections.ConfigDict:
    """DROL defaults (paper, Sec. 5); ``--preset`` and ``--agent.<name>=...`` change them."""
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


HYPERPARAMETER_CHECKS = {
    'lr': positive(),
    'discount': in_interval(0, 1),
    'tau': in_interval(0, 1, low_open=True),
    'q_agg': one_of('mean', 'min'),
    'actor_q_agg': one_of('mean', 'min'),
    'num_candidates': integer_at_least(1, 'K, candidates per state'),
    'critic_num_candidates': integer_at_least(1),
    'inference_num_candidates': integer_at_least(1),
    'bc_coef': at_least(0),
    'q_coef': at_least(0),
}
PROGRESS_METRICS = ('critic/critic_loss', 'actor/bc_loss', 'actor/q')

# Published settings (the authors' production commands). OGBench: every task of a family;
# DROL(16) keeps K=16, DROL* uses the per-family K. Columns: bc_coef, DROL* K, other settings.
_OGBENCH = {
    'antmaze-giant-navigate': (0.03, 1, dict(discount=0.995, q_agg='min')),
    'antmaze-large-navigate': (0.03, 16, dict(discount=0.995, q_agg='min')),
    'antsoccer-arena-navigate': (0.1, 4, dict(discount=0.995)),
    'humanoidmaze-medium-navigate': (0.3, 16, dict(discount=0.995)),
    'humanoidmaze-large-navigate': (0.3, 4, dict(discount=0.995)),
    'cube-single-play': (10.0, 16, {}),
    'cube-double-play': (3.0, 64, {}),
    'scene-play': (3.0, 64, {}),
    'puzzle-3x3-play': (0.3, 32, {}),
    'puzzle-4x4-play': (10.0, 64, {}),
}
# D4RL (500k updates). Columns: bc_coef, tuned K, tuned bc_coef, other settings. AntMaze names
# are spelt out: a pattern such as 'antmaze-large-*' would also match OGBench's antmaze families.
_ADROIT = dict(q_agg='min')
_D4RL = {
    'antmaze-umaze': (0.3, 2, 0.3, {}),
    'antmaze-umaze-diverse': (0.1, 16, 0.1, {}),
    'antmaze-medium-play': (0.1, 32, 0.1, {}),
    'antmaze-medium-diverse': (0.1, 16, 0.1, {}),
    'antmaze-large-play': (0.1, 16, 0.03, {}),
    'antmaze-large-diverse': (0.1, 16, 0.03, {}),
    'pen-*': (1.0, 16, 1.0, _ADROIT),
    'door-*': (10.0, 8, 10.0, _ADROIT),
    'hammer-*': (3.0, 8, 3.0, _ADROIT),
    'relocate-*': (10.0, 32, 10.0, _ADROIT),
}
PUBLISHED_SETTINGS = {
    'paper': {
        **{f: dict(bc_coef=bc, num_candidates=16, **x) for f, (bc, _, x) in _OGBENCH.items()},
        **{f: dict(bc_coef=bc, num_candidates=16, **x) for f, (bc, _, _, x) in _D4RL.items()},
    },
    'paper-tuned': {
        **{f: dict(bc_coef=bc, num_candidates=k, **x) for f, (bc, k, x) in _OGBENCH.items()},
        **{f: dict(bc_coef=bc, num_candidates=k, **x) for f, (_, k, bc, x) in _D4RL.items()},
    },
}
PRESET_LABELS = {'paper': 'DROL(16)', 'paper-tuned': 'DROL*'}


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
    policy,
    q_values,
    latents: jax.Array,
    actions: jax.Array,
    *,
    bc_coef: float,
    q_coef: float,
    actor_q_agg: str,
    normalize_q_loss: bool,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DROL's actor loss (paper, Sec. 4), winners recomputed with gradients.

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
    """DROL with FQL's agent interface: create, update, total_loss, sample_actions."""

    rng: jax.Array
    network: TrainState
    config: Any = nonpytree_field()

    def critic_loss(self, batch, grad_params, rng):
        """TD loss of the critic ensemble; next actions from the actor with fresh latents."""
        next_observations = batch['next_observations']
        latents = sample_ball_prior(
            rng,
            (*next_observations.shape[:-1], self.config['critic_num_candidates']),
            self.config['action_dim'],
        )
        tiled_next = broadcast_states(next_observations, latents.shape[-2])
        next_actions = jnp.clip(
            self.network.select('actor_onestep_flow')(tiled_next, latents), -1, 1
        )
        next_q = self.network.select('target_critic')(tiled_next, next_actions)  # (E, N, C)
        # With several next candidates, keep the one with the highest pessimistic target Q.
        best = jnp.argmax(next_q.min(axis=0), axis=-1)
        next_q = jnp.take_along_axis(next_q, best[None, :, None], axis=-1)[..., 0]
        next_q = aggregate_ensemble(next_q, self.config['q_agg'])

        q = self.network.select('critic')(
            batch['observations'], batch['actions'], params=grad_params
        )
        return td_loss(q, batch['rewards'], batch['masks'], next_q, self.config['discount'])

    def actor_loss(self, batch, grad_params, rng):
        """Routed BC + winner Q loss; the critic gets no gradient from it."""
        observations, actions = batch['observations'], batch['actions']
        latents = sample_ball_prior(
            rng, (actions.shape[0], self.config['num_candidates']), self.config['action_dim']
        )
        frozen = jax.lax.stop_gradient(grad_params)
        actor = self.network.select('actor_onestep_flow')
        return routed_actor_loss(
            policy=lambda z: actor(observations, z, params=grad_params),
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
        rng = self.rng if rng is None else rng
        actor_rng, critic_rng = jax.random.split(rng)
        critic_loss, critic_info = self.critic_loss(batch, grad_params, critic_rng)
        actor_loss, actor_info = self.actor_loss(batch, grad_params, actor_rng)
        return critic_loss + actor_loss, prefixed(critic=critic_info, actor=actor_info)

    @jax.jit
    def update(self, batch):
        """One gradient step on all parameters, then the target-critic EMA."""
        new_rng, rng = jax.random.split(self.rng)
        network, info = self.network.apply_loss_fn(lambda p: self.total_loss(batch, p, rng=rng))
        network = target_update(network, 'critic', self.config['tau'])
        return self.replace(network=network, rng=new_rng), info

    @jax.jit
    def sample_actions(self, observations, seed=None, temperature=1.0):
        """``clip(pi(s, z))`` with one latent per state; best-of-N by Q if configured.

        ``temperature`` is accepted for the interface and ignored, as in the official agents,
        so FQL's evaluation loop (which passes 0) evaluates the policy the paper evaluates.
        """
        del temperature
        seed = self.rng if seed is None else seed
        num = self.config['inference_num_candidates']
        actor = self.network.select('actor_onestep_flow')
        if num == 1:
            latents = sample_ball_prior(seed, observations.shape[:-1], self.config['action_dim'])
            return jnp.clip(actor(observations, latents), -1, 1)
        latents = sample_ball_prior(
            seed, (*observations.shape[:-1], num), self.config['action_dim']
        )
        tiled = broadcast_states(observations, num)
        candidates = jnp.clip(actor(tiled, latents), -1, 1)
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
        critic_def = EnsembleCritic(config['value_hidden_dims'], layer_norm=config['layer_norm'])
        modules = {
            'actor_onestep_flow': ConditionedPolicy(
                config['actor_hidden_dims'], action_dim, layer_norm=config['actor_layer_norm']
            ),
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
