"""Tiny Minari datasets recorded from the real gymnasium-robotics envs, for tests.

``make_tiny_minari_dataset`` writes a dataset under a Minari store folder (what
``MINARI_DATASETS_PATH`` points to) with the id the D4RL family looks up, so that
``FAMILY.load('antmaze-umaze-v2', ...)`` or ``main.py --env_name=antmaze-umaze-v2`` finds it when
``MINARI_DATASETS_PATH`` is that folder.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import gymnasium as gym
import gymnasium_robotics
import minari

gym.register_envs(gymnasium_robotics)

# The env each Minari D4RL dataset was recorded in (AntMaze datasets use the v4 maze envs, whose
# 'observation' is the ant's 27-number state).
ENV_IDS = {
    'D4RL/antmaze/umaze-v1': 'AntMaze_UMaze-v4',
    'D4RL/pen/human-v2': 'AdroitHandPen-v1',
}


@contextlib.contextmanager
def _minari_store(root: Path):
    previous = os.environ.get('MINARI_DATASETS_PATH')
    os.environ['MINARI_DATASETS_PATH'] = str(root)
    try:
        yield
    finally:
        if previous is None:
            del os.environ['MINARI_DATASETS_PATH']
        else:
            os.environ['MINARI_DATASETS_PATH'] = previous


def make_tiny_minari_dataset(
    root: str | os.PathLike,
    dataset_id: str,
    env_id: str | None = None,
    num_episodes: int = 3,
    max_steps: int = 12,
    seed: int = 0,
    eval_max_episode_steps: int | None = None,
    ref_scores: tuple[float, float] | None = None,
) -> Path:
    """Record ``num_episodes`` random-action episodes of ``max_steps`` steps as a Minari dataset.

    Args:
        root: Minari store folder (the value ``MINARI_DATASETS_PATH`` should take).
        dataset_id: e.g. ``'D4RL/antmaze/umaze-v1'``.
        env_id: gymnasium env id; defaults to ``ENV_IDS[dataset_id]``.
        num_episodes: episodes to record; each is truncated after ``max_steps`` steps.
        max_steps: steps per episode.
        seed: seeds the env resets and the random actions.
        eval_max_episode_steps: time limit of the evaluation env stored in the dataset (the env's
            registered limit if None); small values keep end-to-end evaluation fast.
        ref_scores: ``(ref_min_score, ref_max_score)`` stored in the metadata, or None for none.

    Returns:
        The dataset's ``data`` folder.
    """
    root = Path(root)
    env_id = env_id or ENV_IDS[dataset_id]
    eval_env = gym.make(env_id, max_episode_steps=eval_max_episode_steps).spec
    env = minari.DataCollector(gym.make(env_id, max_episode_steps=max_steps))
    env.action_space.seed(seed)
    for episode in range(num_episodes):
        env.reset(seed=seed + episode)
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            done = terminated or truncated
    ref_min, ref_max = ref_scores if ref_scores else (None, None)
    with _minari_store(root):
        env.create_dataset(
            dataset_id,
            eval_env=eval_env,
            algorithm_name='random',
            author='drol_jax tests',
            author_email='tests@drol-jax.invalid',
            code_permalink='tests/minari_fixtures.py',
            description='Random actions, a few short episodes: a test fixture, not a benchmark.',
            ref_min_score=ref_min,
            ref_max_score=ref_max,
        )
    env.close()
    return root / dataset_id / 'data'
