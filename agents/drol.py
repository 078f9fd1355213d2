"""DROL: Dynamic Routing for Offline RL (Mu, Zhao, Zhong, Zhang, 2026).

A one-step actor ``a = pi(s, z)`` with a latent ``z`` drawn uniformly from the d-ball of radius
sqrt(d). Each training state gets K candidate actions (one per latent); each dataset action is
routed to its nearest candidate, and only that winner receives the behaviour-cloning pull and the
critic's push. Routing is recomputed at every gradient step. At test time: one latent, one pass
(or, as an option of the official agent, best-of-N with a density filter).

The loss is computed the efficient way: a gradient-free pass over all K candidates picks the
winners, then only the N winners are recomputed with gradients, so the critic and the actor's
backward pass run on N inputs instead of N*K. Because only the winner enters the loss, this has
the same value and gradient as differentiating through all N*K candidates (tests check this).

Parameter trees and the train state match the official implementation
(``modules_actor_onestep_flow``, ``modules_critic``, ``modules_target_critic``, and the train
state's ``model_state`` field), so parameter files move both ways. Random keys are consumed as the
official agent consumes them: the same parameters, batch and key give the same update, and the
same seed gives the same action.

A variant of DROL is a file that imports this one (``from agents import drol``), subclasses
``DROLAgent`` and overrides ``routed_loss`` (the actor loss given the K latents per state),
``actor_loss`` or ``networks``, reusing the pure helpers below.
"""

from __future__ import annotations

import copy
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from drol_jax.encoders import ENCODER_RULE, make_encoder
from drol_jax.hyperparameters import at_least, in_interval, integer_at_least, one_of, positive
from drol_jax.losses import prefixed, td_loss
from drol_jax.networks import ConditionedPolicy, EnsembleCritic, aggregate_ensemble, batch_shape
from drol_jax.train_state import ModuleDict, nonpytree_field, target_update
from drol_jax.train_state import TrainState as SharedTrainState


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
            critic_selection_q_agg='min',  # How the target critic ranks those candidates.
            bc_coef=1.0,
            q_coef=1.0,
            normalize_q_loss=True,
            inference_best_of_n=False,  # Best-of-N at test time; off: one latent, one pass.
            inference_num_samples=32,  # N: candidates per state for best-of-N.
            inference_use_density_filter=False,  # Rank only the candidates in dense regions.
            inference_dense_topk=8,  # How many: smallest mean squared distance to the others.
            inference_q_agg='mean',  # How the critic ranks the candidates at test time.
            # Image encoder of every module (None: state inputs): impala_small, impala, ...
            encoder=ml_collections.config_dict.placeholder(str),
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
    'critic_selection_q_agg': one_of('mean', 'min'),
    'bc_coef': at_least(0),
    'q_coef': at_least(0),
    'normalize_q_loss': one_of(True, False),
    'inference_best_of_n': one_of(True, False),
    'inference_num_samples': integer_at_least(1, 'N, candidates for best-of-N'),
    'inference_use_density_filter': one_of(True, False),
    # More than inference_num_samples keeps them all, as in the official agent.
    'inference_dense_topk': integer_at_least(1),
    'inference_q_agg': one_of('mean', 'min'),
    'encoder': ENCODER_RULE,
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
# Pure helpers: the prior, routing and its diagnostics, best-of-N.


def sample_ball_prior(rng: jax.Array, shape: tuple[int, ...], dim: int) -> jax.Array:
    """Latents uniform in the ``dim``-ball of radius sqrt(dim), shape ``(*shape, dim)``.

    ``z = sqrt(d) * u**(1/d) * g/|g|`` with ``g ~ N(0, I)``, ``u ~ U(0, 1)``: a uniform direction
    times a radius whose distribution makes the density uniform in volume. The tiny constants
    (under and after the square root, and in the exponent) are the official implementation's
    guards; keeping them gives its latents for the same key, to the last bit.
    """
    direction_rng, radius_rng = jax.random.split(rng)
    g = jax.random.normal(direction_rng, (*shape, dim))
    u = jax.random.uniform(radius_rng, (*shape, 1))
    norm = jnp.sqrt(jnp.sum(g**2, axis=-1, keepdims=True) + 1e-6) + 1e-8
    return jnp.sqrt(dim) * u ** (1.0 / (dim + 1e-8)) * (g / norm)


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
    return {'best_idx_entropy': entropy, 'best_idx_max_prob': share.max()}


def candidate_divergence(candidates: jax.Array) -> jax.Array:
    """Mean per-dimension squared distance of the candidates ``(N, K, d)`` to their state's mean."""
    deviation = candidates - candidates.mean(axis=1, keepdims=True)
    return jnp.mean(deviation**2)


def candidate_spread(candidates: jax.Array) -> jax.Array:
    """Mean over states and pairs k != l of ``|c_k - c_l|^2 / d`` (0 for K=1).

    Uses ``mean_{k != l} |c_k - c_l|^2 = 2 K/(K-1) * mean_k |c_k - mean(c)|^2`` to avoid the
    K x K pairwise tensor.
    """
    num_candidates = candidates.shape[1]
    if num_candidates < 2:
        return jnp.zeros(())
    return candidate_divergence(candidates) * 2 * num_candidates / (num_candidates - 1)


def routing_diagnostics(
    candidates: jax.Array, distances: jax.Array, winners: jax.Array
) -> dict[str, jax.Array]:
    """The official agent's routing metrics: balance, spread, distance to the data.

    ``gate`` is the official agent's closeness score of the winners, ``exp(-D_{i,k*} / 0.1)``;
    it is logged only (neither agent weights a loss with it).
    """
    spread = candidate_spread(candidates)
    winner_distances = jnp.take_along_axis(distances, winners[:, None], axis=1)[:, 0]
    return {
        'min_d2': winner_distances.mean(),
        'gate': jnp.exp(-winner_distances / 0.1).mean(),
        'candidate_divergence': candidate_divergence(candidates),
        'candidate_pairwise_dist2': spread,
        'candidate_pairwise_dist': jnp.sqrt(jnp.maximum(spread, 0.0)),
        **routing_balance(winners, candidates.shape[1]),
    }


def routing_pass(policy, latents: jax.Array, actions: jax.Array):
    """All K candidates of every state, their distances to the data and the winners; no gradient.

    Args:
        policy: raw actor output for one latent per state, ``(N, d) -> (N, d)``.
        latents: ``(N, K, d)`` prior samples.
        actions: ``(N, d)`` dataset actions.

    Returns:
        ``(candidates (N, K, d), distances (N, K), winners (N,))``.
    """
    # One vmapped actor call; argmin has no gradient, so neither does this pass.
    candidates = jnp.clip(jax.vmap(policy, in_axes=1, out_axes=1)(latents), -1, 1)
    candidates = jax.lax.stop_gradient(candidates)
    distances = candidate_distances(candidates, actions)
    return candidates, distances, route_to_nearest(distances)


def q_term(
    q_values: jax.Array, actor_q_agg: str, normalize_q_loss: bool
) -> tuple[jax.Array, jax.Array]:
    """``(q_loss, q)`` from the ensemble Q-values ``(E, N)`` of one action per state.

    ``q_loss = -mean(q)``, divided by the gradient-free ``max(mean |q|, 1e-6)`` when normalised.
    """
    q = aggregate_ensemble(q_values, actor_q_agg)
    q_loss = -q.mean()
    if normalize_q_loss:
        q_loss = q_loss * jax.lax.stop_gradient(1.0 / jnp.maximum(jnp.abs(q).mean(), 1e-6))
    return q_loss, q


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
    candidates, distances, winners = routing_pass(policy, latents, actions)
    # Learning pass: recompute only the winners, with gradients.
    winner_latents = jnp.take_along_axis(latents, winners[:, None, None], axis=1)[:, 0]
    winner_actions = jnp.clip(policy(winner_latents), -1, 1)
    bc_loss = jnp.mean((winner_actions - actions) ** 2)
    q_loss, q = q_term(q_values(winner_actions), actor_q_agg, normalize_q_loss)
    actor_loss = bc_coef * bc_loss + q_coef * q_loss
    info = {'actor_loss': actor_loss, 'bc_loss': bc_loss, 'q_loss': q_loss, 'q': q.mean()}
    return actor_loss, {**info, **routing_diagnostics(candidates, distances, winners)}


def actor_loss_settings(config) -> dict[str, Any]:
    """The keyword arguments of ``routed_actor_loss`` from an agent config."""
    return {key: config[key] for key in ('bc_coef', 'q_coef', 'actor_q_agg', 'normalize_q_loss')}


def densest(candidates: jax.Array, keep: int) -> jax.Array:
    """The ``keep`` densest candidates of ``(..., n, d)``, densest first.

    Density is the mean squared distance to the state's other candidates (smaller is denser), so
    isolated candidates (far from the rest) are dropped; ties keep the lower index, and
    ``keep >= n`` keeps all of them (ordered by density).
    """
    num = candidates.shape[-2]
    pairwise = jnp.sum((candidates[..., :, None, :] - candidates[..., None, :, :]) ** 2, axis=-1)
    mean_distance = pairwise.sum(axis=-1) / max(num - 1, 1)  # The diagonal is exactly 0.
    order = jnp.argsort(mean_distance, axis=-1)[..., : min(keep, num)]
    return jnp.take_along_axis(candidates, order[..., None], axis=-2)


# ---------------------------------------------------------------------------------------------
# The agent.


class TrainState(SharedTrainState):
    """The shared train state plus the official DROL's ``model_state`` field.

    DROL has no mutable collections, so the field stays empty; it is there because the official
    DROL train state has it, and a parameter file's fields must be the same on both sides.
    """

    model_state: Any = flax.core.FrozenDict()


class DROLAgent(flax.struct.PyTreeNode):
    """DROL with FQL's agent interface: create, update, total_loss, sample_actions."""

    rng: jax.Array
    network: TrainState
    config: Any = nonpytree_field()

    def policy(self, observations, latents):
        """``clip(pi(s, z))`` for states and latents of the same leading shape."""
        return jnp.clip(self.network.select('actor_onestep_flow')(observations, latents), -1, 1)

    def sample_single(self, observations, seed):
        """One action per state from one prior latent each."""
        shape = batch_shape(observations, self.config.get('ob_dims'))
        latents = sample_ball_prior(seed, shape, self.config['action_dim'])
        return self.policy(observations, latents)

    def sample_candidates(self, observations, seed, num):
        """``num`` actions per state, shape ``(..., num, d)``, one prior latent each.

        The networks broadcast each state over its ``num`` latents (an image is encoded once).
        """
        shape = (*batch_shape(observations, self.config.get('ob_dims')), num)
        latents = sample_ball_prior(seed, shape, self.config['action_dim'])
        return self.policy(observations, latents)

    def best_by_q(self, observations, candidates, critic, q_agg):
        """Per state, the candidate of ``(..., n, d)`` that ``critic`` ranks highest.

        ``q_agg`` reduces the ensemble; on ties the first candidate wins.
        """
        q = aggregate_ensemble(self.network.select(critic)(observations, candidates), q_agg)
        best = jnp.argmax(q, axis=-1)
        return jnp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]

    def critic_loss(self, batch, grad_params, rng):
        """TD loss of the critic ensemble; next actions from the actor with fresh latents."""
        _, sample_rng = jax.random.split(rng)  # The official split (its first key goes unused).
        next_observations = batch['next_observations']
        num_next = self.config['critic_num_candidates']
        if num_next == 1:
            next_actions = self.sample_single(next_observations, sample_rng)
        else:
            next_actions = self.best_by_q(
                next_observations,
                self.sample_candidates(next_observations, sample_rng, num_next),
                'target_critic',
                self.config['critic_selection_q_agg'],
            )
        next_q = self.network.select('target_critic')(next_observations, next_actions)
        next_q = aggregate_ensemble(next_q, self.config['q_agg'])
        q = self.network.select('critic')(
            batch['observations'], batch['actions'], params=grad_params
        )
        return td_loss(q, batch['rewards'], batch['masks'], next_q, self.config['discount'])

    def actor_loss_networks(self, observations, grad_params):
        """``(policy, q_values)`` for ``routed_actor_loss`` and its variants, on these states.

        ``policy(z)`` is the raw actor output with gradients; ``q_values(a)`` the critic
        ensemble's, without: the critic gets no gradient from an actor loss.
        """
        actor = self.network.select('actor_onestep_flow')
        frozen = jax.lax.stop_gradient(grad_params)
        return (
            lambda z: actor(observations, z, params=grad_params),
            lambda a: self.network.select('critic')(observations, a, params=frozen),
        )

    def routed_loss(self, batch, grad_params, latents):
        """The actor loss given K latents per state ``(N, K, d)``: routed BC + winner Q loss.

        A variant of DROL overrides this (or ``actor_loss``) and keeps the rest of the agent.
        """
        policy, q_values = self.actor_loss_networks(batch['observations'], grad_params)
        return routed_actor_loss(
            policy, q_values, latents, batch['actions'], **actor_loss_settings(self.config)
        )

    def actor_loss(self, batch, grad_params, rng):
        """``routed_loss`` on fresh latents, plus ``mse``: one fresh sample against the data."""
        actions = batch['actions']
        mse_rng, latent_rng = jax.random.split(rng)
        latents = sample_ball_prior(
            latent_rng,
            (actions.shape[0], self.config['num_candidates']),
            self.config['action_dim'],
        )
        actor_loss, info = self.routed_loss(batch, grad_params, latents)
        single = self.sample_single(batch['observations'], mse_rng)
        return actor_loss, {**info, 'mse': jnp.mean((single - actions) ** 2)}

    @jax.jit
    def total_loss(self, batch, grad_params, rng=None):
        """Critic loss + actor loss, with ``critic/...`` and ``actor/...`` diagnostics."""
        rng = self.rng if rng is None else rng
        _, actor_rng, critic_rng = jax.random.split(rng, 3)  # The official three-way split.
        critic_loss, critic_info = self.critic_loss(batch, grad_params, critic_rng)
        actor_loss, actor_info = self.actor_loss(batch, grad_params, actor_rng)
        return critic_loss + actor_loss, prefixed(critic=critic_info, actor=actor_info)

    @jax.jit
    def update(self, batch):
        """One gradient step on all parameters, then the target-critic EMA."""
        new_rng, rng = jax.random.split(self.rng)
        network, info = self.network.apply_loss_fn(lambda p: self.total_loss(batch, p, rng=rng))
        network = target_update(network, self.network, 'critic', self.config['tau'])
        return self.replace(network=network, rng=new_rng), info

    @jax.jit
    def sample_actions(self, observations, seed=None, temperature=1.0):
        """``clip(pi(s, z))`` with one latent per state, or best-of-N if configured.

        Best-of-N (``inference_best_of_n``): N candidates per state, optionally only the
        ``inference_dense_topk`` densest of them, and the one the critic ranks highest by
        ``inference_q_agg``. ``temperature`` is accepted for the interface and ignored, as in
        the official agents, so FQL's evaluation loop (which passes 0) evaluates the policy the
        paper evaluates.
        """
        del temperature
        seed = self.rng if seed is None else seed
        num = self.config['inference_num_samples']
        if not self.config['inference_best_of_n'] or num <= 1:
            return self.sample_single(observations, seed)
        candidates = self.sample_candidates(observations, seed, num)
        if self.config['inference_use_density_filter']:
            candidates = densest(candidates, self.config['inference_dense_topk'])
        return self.best_by_q(observations, candidates, 'critic', self.config['inference_q_agg'])

    @staticmethod
    def networks(config, action_dim: int) -> dict[str, nn.Module]:
        """The networks by name; each is initialised on example (observations, actions).

        With an ``encoder``, the actor and the critic each own one (the target critic a copy of
        the critic's), as in the official agent.
        """
        encoder = config.get('encoder')
        critic_def = EnsembleCritic(
            config['value_hidden_dims'],
            layer_norm=config['layer_norm'],
            encoder=make_encoder(encoder),
        )
        return {
            'actor_onestep_flow': ConditionedPolicy(
                config['actor_hidden_dims'],
                action_dim,
                layer_norm=config['actor_layer_norm'],
                encoder=make_encoder(encoder),
            ),
            'critic': critic_def,
            'target_critic': copy.deepcopy(critic_def),
        }

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """Initialise the actor, critic ensemble and target critic from example inputs."""
        rng, init_rng = jax.random.split(jax.random.PRNGKey(seed))
        action_dim = ex_actions.shape[-1]
        network_def = ModuleDict(cls.networks(config, action_dim))
        # The actor's example latent has the action's shape.
        inputs = {name: (ex_observations, ex_actions) for name in network_def.modules}
        params = network_def.init(init_rng, **inputs)['params']
        params['modules_target_critic'] = params['modules_critic']
        network = TrainState.create(network_def, params, optax.adam(config['lr']))
        ob_dims = tuple(ex_observations.shape[1:])
        return cls(
            rng,
            network=network,
            config=flax.core.FrozenDict(**config, action_dim=action_dim, ob_dims=ob_dims),
        )
