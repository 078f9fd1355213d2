"""FQL: Flow Q-Learning (Park, Li, Levine, ICML 2025), the baseline beside DROL.

A behaviour-cloning flow policy ``v(s, x_t, t)`` is trained with flow matching; a one-step policy
``mu(s, z)`` (``z ~ N(0, I)``) is distilled from the flow's Euler-integrated actions on the same
noise and pushed up the critic. Inference is one pass of the one-step policy.

Parameter trees and the train state match the official implementation (``modules_actor_bc_flow``,
``modules_actor_onestep_flow``, ``modules_critic``, ``modules_target_critic``), so parameter files
move both ways. Random keys are consumed as the official agent consumes them: the same
parameters, batch and key give the same update, and the same seed gives the same action.
"""

from __future__ import annotations

import copy
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from drol_jax.encoders import ENCODER_RULE, make_encoder
from drol_jax.hyperparameters import at_least, in_interval, integer_at_least, one_of, positive
from drol_jax.losses import prefixed, td_loss
from drol_jax.networks import ConditionedPolicy, EnsembleCritic, aggregate_ensemble, batch_shape
from drol_jax.train_state import ModuleDict, TrainState, nonpytree_field, target_update


def get_config() -> ml_collections.ConfigDict:
    """FQL defaults (FQL paper, Appendix); ``--preset`` and ``--agent.<name>=...`` change them."""
    return ml_collections.ConfigDict(
        dict(
            agent_name='fql',
            lr=3e-4,
            batch_size=256,
            actor_hidden_dims=(512, 512, 512, 512),
            value_hidden_dims=(512, 512, 512, 512),
            layer_norm=True,  # Critic LayerNorm.
            actor_layer_norm=False,
            discount=0.99,
            tau=0.005,
            q_agg='mean',  # Ensemble aggregation in the TD target: 'mean' or 'min'.
            alpha=10.0,  # Distillation coefficient.
            flow_steps=10,  # Euler steps of the teacher flow.
            normalize_q_loss=False,
            # Image encoder of every module (None: state inputs): impala_small, impala, ...
            encoder=ml_collections.config_dict.placeholder(str),
        )
    )


HYPERPARAMETER_CHECKS = {
    'lr': positive(),
    'discount': in_interval(0, 1),
    'tau': in_interval(0, 1, low_open=True),
    'q_agg': one_of('mean', 'min'),
    'alpha': at_least(0),
    'flow_steps': integer_at_least(1, 'Euler steps of the teacher flow'),
    'encoder': ENCODER_RULE,
}
PROGRESS_METRICS = ('critic/critic_loss', 'actor/bc_flow_loss', 'actor/q')

# Published settings (FQL paper, Appendix; the same alpha for every task of a family).
_LOCOMOTION = dict(discount=0.995)
_MIN = dict(q_agg='min')
_PAPER = {
    'antmaze-giant-navigate': dict(alpha=10.0, **_LOCOMOTION, **_MIN),
    'antmaze-large-navigate': dict(alpha=10.0, **_MIN),
    'antsoccer-arena-navigate': dict(alpha=10.0, **_LOCOMOTION),
    'humanoidmaze-medium-navigate': dict(alpha=30.0, **_LOCOMOTION),
    'humanoidmaze-large-navigate': dict(alpha=30.0, **_LOCOMOTION),
    'cube-single-play': dict(alpha=300.0),
    'cube-double-play': dict(alpha=300.0),
    'scene-play': dict(alpha=300.0),
    'puzzle-3x3-play': dict(alpha=1000.0),
    'puzzle-4x4-play': dict(alpha=1000.0),
    'antmaze-umaze': dict(alpha=10.0),
    'antmaze-umaze-diverse': dict(alpha=10.0),
    'antmaze-medium-play': dict(alpha=10.0),
    'antmaze-medium-diverse': dict(alpha=10.0),
    'antmaze-large-play': dict(alpha=3.0),
    'antmaze-large-diverse': dict(alpha=3.0),
    'pen-human': dict(alpha=10000.0, **_MIN),
    'pen-cloned': dict(alpha=10000.0, **_MIN),
    'pen-expert': dict(alpha=3000.0, **_MIN),
    'door-*': dict(alpha=30000.0, **_MIN),
    'hammer-human': dict(alpha=30000.0, **_MIN),
    'hammer-cloned': dict(alpha=10000.0, **_MIN),
    'hammer-expert': dict(alpha=30000.0, **_MIN),
    'relocate-human': dict(alpha=10000.0, **_MIN),
    'relocate-cloned': dict(alpha=30000.0, **_MIN),
    'relocate-expert': dict(alpha=30000.0, **_MIN),
}
# Offline-to-online (`--online_steps=1000000` after the offline updates): the authors' flags in
# the FQL README's offline-to-online commands, for exactly the tasks those commands cover; on
# most of them the alpha is the offline one.
_SAME_AS_OFFLINE = (
    'cube-double-play',
    'scene-play',
    'puzzle-4x4-play',
    'antmaze-umaze',
    'antmaze-umaze-diverse',
    'antmaze-medium-play',
    'antmaze-medium-diverse',
    'antmaze-large-play',
    'antmaze-large-diverse',
)
_ONLINE = {
    'humanoidmaze-medium-navigate': dict(alpha=100.0, **_LOCOMOTION),
    'antsoccer-arena-navigate': dict(alpha=30.0, **_LOCOMOTION),
    **{family: _PAPER[family] for family in _SAME_AS_OFFLINE},
    'pen-cloned': dict(alpha=1000.0, **_MIN),
    'door-cloned': dict(alpha=1000.0, **_MIN),
    'hammer-cloned': dict(alpha=1000.0, **_MIN),
    'relocate-cloned': dict(alpha=10000.0, **_MIN),
}
# FQL has one published setting per task, so the tuned preset is the same table.
PUBLISHED_SETTINGS = {'paper': _PAPER, 'paper-tuned': _PAPER, 'paper-online': _ONLINE}
PRESET_LABELS = {'paper': 'FQL', 'paper-tuned': 'FQL', 'paper-online': 'FQL'}


# ---------------------------------------------------------------------------------------------
# The agent.


class FQLAgent(flax.struct.PyTreeNode):
    """FQL with FQL's agent interface: create, update, total_loss, sample_actions."""

    rng: jax.Array
    network: TrainState
    config: Any = nonpytree_field()

    def critic_loss(self, batch, grad_params, rng):
        """TD loss of the critic ensemble; next actions from the one-step policy."""
        _, sample_rng = jax.random.split(rng)  # The official split (its first key goes unused).
        next_actions = self.sample_actions(batch['next_observations'], seed=sample_rng)
        next_q = self.network.select('target_critic')(batch['next_observations'], next_actions)
        next_q = aggregate_ensemble(next_q, self.config['q_agg'])

        q = self.network.select('critic')(
            batch['observations'], batch['actions'], params=grad_params
        )
        return td_loss(q, batch['rewards'], batch['masks'], next_q, self.config['discount'])

    def actor_loss(self, batch, grad_params, rng):
        """Flow-matching BC + alpha * distillation + Q loss; ``mse`` of one fresh sample."""
        observations, actions = batch['observations'], batch['actions']
        batch_size, action_dim = actions.shape
        # The official agent's keys: three for the flow, then two from the first for the noise
        # and the mse sample.
        rng, x_rng, t_rng = jax.random.split(rng, 3)
        mse_rng, noise_rng = jax.random.split(rng)

        x_0 = jax.random.normal(x_rng, (batch_size, action_dim))
        t = jax.random.uniform(t_rng, (batch_size, 1))
        x_t = (1 - t) * x_0 + t * actions
        velocity = self.network.select('actor_bc_flow')(observations, x_t, t, params=grad_params)
        bc_flow_loss = jnp.mean((velocity - (actions - x_0)) ** 2)

        noises = jax.random.normal(noise_rng, (batch_size, action_dim))
        teacher = jax.lax.stop_gradient(self.compute_flow_actions(observations, noises))
        student = self.network.select('actor_onestep_flow')(
            observations, noises, params=grad_params
        )
        distill_loss = jnp.mean((student - teacher) ** 2)

        student = jnp.clip(student, -1, 1)
        q = self.network.select('critic')(
            observations, student, params=jax.lax.stop_gradient(grad_params)
        )
        q = q.mean(axis=0)
        q_loss = -q.mean()
        if self.config['normalize_q_loss']:
            q_loss = q_loss * jax.lax.stop_gradient(1.0 / jnp.maximum(jnp.abs(q).mean(), 1e-6))
        actor_loss = bc_flow_loss + self.config['alpha'] * distill_loss + q_loss
        return actor_loss, {
            'actor_loss': actor_loss,
            'bc_flow_loss': bc_flow_loss,
            'distill_loss': distill_loss,
            'q_loss': q_loss,
            'q': q.mean(),
            'mse': jnp.mean((self.sample_actions(observations, seed=mse_rng) - actions) ** 2),
        }

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
    def compute_flow_actions(self, observations, noises):
        """Teacher actions: Euler integration of the flow from ``noises``, clipped to [-1, 1].

        With an encoder the images are encoded once, by the flow's own encoder (the module
        ``actor_bc_flow_encoder``, as in the official agent), not at every step.
        """
        steps = self.config['flow_steps']
        is_encoded = self.config['encoder'] is not None
        if is_encoded:
            observations = self.network.select('actor_bc_flow_encoder')(observations)

        def euler_step(actions, i):
            t = jnp.full((*noises.shape[:-1], 1), i / steps)
            velocity = self.network.select('actor_bc_flow')(
                observations, actions, t, is_encoded=is_encoded
            )
            return actions + velocity / steps, None

        actions, _ = jax.lax.scan(euler_step, noises, jnp.arange(steps))
        return jnp.clip(actions, -1, 1)

    @jax.jit
    def sample_actions(self, observations, seed=None, temperature=1.0):
        """``clip(mu(s, z))`` with ``z ~ N(0, I)``: one pass.

        The noise comes from the first half of the split ``seed``, as in the official agent, so
        the same seed gives the same action. ``temperature`` is accepted for the interface and
        ignored, as in the official agent.
        """
        del temperature
        seed = self.rng if seed is None else seed
        noise_seed, _ = jax.random.split(seed)
        shape = (*batch_shape(observations, self.config['ob_dims']), self.config['action_dim'])
        noises = jax.random.normal(noise_seed, shape)
        return jnp.clip(self.network.select('actor_onestep_flow')(observations, noises), -1, 1)

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """Initialise the flow, one-step policy, critic ensemble and target critic.

        With an ``encoder`` each module owns one (the target critic a copy of the critic's); the
        BC flow's is also the module ``actor_bc_flow_encoder``, where its parameters live, as
        in the official agent.
        """
        rng, init_rng = jax.random.split(jax.random.PRNGKey(seed))
        action_dim = ex_actions.shape[-1]
        ex_times = ex_actions[..., :1]
        policy_args = (config['actor_hidden_dims'], action_dim)
        flow_encoder = make_encoder(config['encoder'])
        critic_def = EnsembleCritic(
            config['value_hidden_dims'],
            layer_norm=config['layer_norm'],
            encoder=make_encoder(config['encoder']),
        )
        modules = {
            'actor_bc_flow': ConditionedPolicy(
                *policy_args, layer_norm=config['actor_layer_norm'], encoder=flow_encoder
            ),
            'actor_onestep_flow': ConditionedPolicy(
                *policy_args,
                layer_norm=config['actor_layer_norm'],
                encoder=make_encoder(config['encoder']),
            ),
            'critic': critic_def,
            'target_critic': copy.deepcopy(critic_def),
        }
        inputs = {
            'actor_bc_flow': (ex_observations, ex_actions, ex_times),
            'actor_onestep_flow': (ex_observations, ex_actions),
            'critic': (ex_observations, ex_actions),
            'target_critic': (ex_observations, ex_actions),
        }
        if flow_encoder is not None:
            modules['actor_bc_flow_encoder'] = flow_encoder
            inputs['actor_bc_flow_encoder'] = (ex_observations,)
        network_def = ModuleDict(modules)
        params = network_def.init(init_rng, **inputs)['params']
        params['modules_target_critic'] = params['modules_critic']
        network = TrainState.create(network_def, params, optax.adam(config['lr']))
        ob_dims = tuple(ex_observations.shape[1:])
        return cls(
            rng,
            network=network,
            config=flax.core.FrozenDict(**config, action_dim=action_dim, ob_dims=ob_dims),
        )
