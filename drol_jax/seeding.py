"""Every random stream of a run, derived from the run's seed in one place.

A run with seed ``s`` uses independent streams for: the agent's own key (``Agent.create(s)``),
batch sampling, evaluation actions, online fine-tuning actions and the evaluation episodes'
env resets. Offsets by distinct primes keep the streams of seeds ``s`` and ``s + 1`` apart.
Changing a number here changes every result, so they are fixed.
"""

from __future__ import annotations

import jax
import numpy as np

_SAMPLER = 10_007
_ONLINE_ACTIONS = 20_011
_EVAL_ACTIONS = 30_011
_ANALYSIS_EVAL = 40_009
_EPISODES_PER_SEED = 100_003


def sampler_key(seed: int) -> jax.Array:
    """Key of the batch-index stream of one seed (advanced by every update)."""
    return jax.random.PRNGKey(seed + _SAMPLER)


def sampler_keys(seeds: list[int]) -> jax.Array:
    """Sampler keys of several seeds stacked on a leading axis."""
    return jax.numpy.stack([sampler_key(s) for s in seeds])


def eval_actions_key(seed: int, step: int) -> jax.Array:
    """Base key of the evaluation policy's latents at training step ``step``."""
    return jax.random.fold_in(jax.random.PRNGKey(seed + _EVAL_ACTIONS), step)


def analysis_eval_key(seed: int) -> jax.Array:
    """Key of the evaluation latents of the analysis figures."""
    return jax.random.PRNGKey(seed + _ANALYSIS_EVAL)


def online_action_key(seed: int, step: int) -> jax.Array:
    """Key of the action taken at online fine-tuning step ``step``."""
    return jax.random.fold_in(jax.random.PRNGKey(seed + _ONLINE_ACTIONS), step)


def online_host_rng(seed: int, step: int) -> np.random.Generator:
    """Host generator of fine-tuning batches, restarted from ``step`` (resumable)."""
    return np.random.default_rng([seed, step])


def episode_seed(seed: int, episode: int) -> int:
    """Env reset seed of evaluation episode ``episode`` of a run with seed ``seed``."""
    return seed * _EPISODES_PER_SEED + episode
