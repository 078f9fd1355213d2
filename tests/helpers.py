"""Small shared pieces for the tests: tiny configs, random batches, fused training."""

import jax
import numpy as np

from drol_jax.data import to_device
from drol_jax.train import make_train_block, stack_agents, unstack_agent

SMALL_HIDDEN = (64, 64)


def small_config(config, **overrides):
    """A copy of an agent config with small networks (fast on CPU) and the given overrides."""
    config = config.copy_and_resolve_references()
    config.actor_hidden_dims = SMALL_HIDDEN
    config.value_hidden_dims = SMALL_HIDDEN
    config.batch_size = 64
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def train_fused(agent_class, config, dataset, num_updates, seed=0):
    """Create an agent and train it with the library's fused update block."""
    agent = agent_class.create(seed, dataset['observations'][:1], dataset['actions'][:1], config)
    block = make_train_block(config.batch_size)
    keys = jax.random.PRNGKey(seed + 1)[None]
    agents, _, _, _ = block(stack_agents([agent]), keys, to_device(dataset), num_updates)
    return unstack_agent(agents, 0)


def interval_dataset(intervals, size=4096, seed=0):
    """1-D actions uniform in separated intervals at a constant state; no reward, no bootstrap.

    Zero rewards and masks make the critic flat, so behaviour cloning drives the actor.
    """
    rng = np.random.default_rng(seed)
    which = rng.integers(len(intervals), size=size)
    low, high = np.array(intervals).T
    actions = rng.uniform(low[which], high[which])[:, None].astype(np.float32)
    observations = np.zeros((size, 2), np.float32)
    return {
        'observations': observations,
        'actions': actions,
        'rewards': np.zeros(size, np.float32),
        'masks': np.zeros(size, np.float32),
        'terminals': np.ones(size, np.float32),
        'next_observations': observations,
    }
