"""FQL: Flow Q-Learning (Park, Li, Levine, ICML 2025), the baseline beside DROL.

A behaviour-cloning flow policy ``v(s, x_t, t)`` is trained with flow matching; a one-step policy
``mu(s, z)`` (``z ~ N(0, I)``) is distilled from the flow's Euler-integrated actions on the same
noise and pushed up the critic. Inference is one pass of the one-step policy.
"""

from __future__ import annotations

import copy
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
    """FQL defaults (SPEC 2); per-task ``alpha`` etc. are set with ``--agent.<name>=...``."""
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
        )
    )


class FQLAgent(flax.struct.PyTreeNode):
    """FQL with the agent interface: ``create``, ``update``, ``total_loss``, ``sample_actions``."""

    rng: jax.Array
    network: TrainState
    config: Any = nonpytree_field()

    def critic_loss(self, batch, grad_params, rng):
        """TD loss of the critic ensemble with the one-step policy's next action."""
        next_actions = self.sample_actions(batch['next_observations'], seed=rng)
        next_q = self.network.select('target_critic')(batch['next_observations'], next_actions)
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
        """Flow-matching BC + alpha * distillation + Q loss of the one-step policy."""
        observations, actions = batch['observations'], batch['actions']
        batch_size, action_dim = actions.shape
        x_rng, t_rng, noise_rng = jax.random.split(rng, 3)

        x_0 = jax.random.normal(x_rng, (batch_size, action_dim))
        t = jax.random.uniform(t_rng, (batch_size, 1))
        x_t = (1 - t) * x_0 + t * actions
        velocity = self.network.select('flow')(observations, x_t, t, params=grad_params)
        bc_flow_loss = jnp.mean((velocity - (actions - x_0)) ** 2)

        noises = jax.random.normal(noise_rng, (batch_size, action_dim))
        teacher = jax.lax.stop_gradient(self.compute_flow_actions(observations, noises))
        student = self.network.select('onestep')(observations, noises, params=grad_params)
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
            'mse': jnp.mean((student - actions) ** 2),
        }

    @jax.jit
    def total_loss(self, batch, grad_params, rng=None):
        """Critic loss + actor loss, with ``critic/...`` and ``actor/...`` diagnostics."""
        return actor_critic_loss(self, batch, grad_params, self.rng if rng is None else rng)

    @jax.jit
    def update(self, batch):
        """One gradient step on all parameters, then the target-critic EMA."""
        return actor_critic_update(self, batch)

    @jax.jit
    def compute_flow_actions(self, observations, noises):
        """Teacher actions: Euler integration of the flow from ``noises``, clipped to [-1, 1]."""
        steps = self.config['flow_steps']

        def euler_step(actions, i):
            t = jnp.full((*observations.shape[:-1], 1), i / steps)
            return actions + self.network.select('flow')(observations, actions, t) / steps, None

        actions, _ = jax.lax.scan(euler_step, noises, jnp.arange(steps))
        return jnp.clip(actions, -1, 1)

    @jax.jit
    def sample_actions(self, observations, seed=None, temperature=1.0):
        """``clip(mu(s, z))`` with ``z ~ N(0, temperature^2 I)``: one pass."""
        seed = self.rng if seed is None else seed
        noises = temperature * jax.random.normal(
            seed, (*observations.shape[:-1], self.config['action_dim'])
        )
        return jnp.clip(self.network.select('onestep')(observations, noises), -1, 1)

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """Initialise the flow, one-step policy, critic ensemble and target critic."""
        rng, init_rng = jax.random.split(jax.random.PRNGKey(seed))
        action_dim = ex_actions.shape[-1]
        ex_times = ex_actions[..., :1]
        policy_args = (config['actor_hidden_dims'], action_dim)
        critic_def = EnsembleCritic(config['value_hidden_dims'], layer_norm=config['layer_norm'])
        modules = {
            'flow': ConditionedPolicy(*policy_args, layer_norm=config['actor_layer_norm']),
            'onestep': ConditionedPolicy(*policy_args, layer_norm=config['actor_layer_norm']),
            'critic': critic_def,
            'target_critic': copy.deepcopy(critic_def),
        }
        inputs = {
            'flow': (ex_observations, ex_actions, ex_times),
            'onestep': (ex_observations, ex_actions),
            'critic': (ex_observations, ex_actions),
            'target_critic': (ex_observations, ex_actions),
        }
        network_def = ModuleDict(modules)
        params = network_def.init(init_rng, **inputs)['params']
        params['modules_target_critic'] = params['modules_critic']
        network = TrainState.create(network_def, params, optax.adam(config['lr']))
        return cls(
            rng, network=network, config=flax.core.FrozenDict(**config, action_dim=action_dim)
        )
