"""Frame stacking for evaluation and online interaction, as the training batches stack frames.

After ``reset`` the stack holds k copies of the first observation; each ``step`` pushes the new
observation and drops the oldest. The observation is the channel concatenation, oldest first.
This is what ``drol_jax.frames`` builds from a dataset, where indices before an episode's
start are clamped to it, so a policy sees the same stacks in training and in evaluation.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np


class FrameStack(gym.Wrapper):
    """Observations are the last ``num_frames`` observations concatenated on the last axis."""

    def __init__(self, env: gym.Env, num_frames: int):
        super().__init__(env)
        if num_frames < 1:
            raise ValueError(f'num_frames must be >= 1, got {num_frames}')
        self.num_frames = num_frames
        self.frames: collections.deque = collections.deque(maxlen=num_frames)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(
            low=np.concatenate([space.low] * num_frames, axis=-1),
            high=np.concatenate([space.high] * num_frames, axis=-1),
            dtype=space.dtype,
        )

    def observation(self) -> np.ndarray:
        """The current stack."""
        return np.concatenate(list(self.frames), axis=-1)

    def reset(self, **kwargs):
        """Start an episode with the first observation repeated ``num_frames`` times."""
        observation, info = self.env.reset(**kwargs)
        self.frames.extend([observation] * self.num_frames)
        if 'goal' in info:  # A goal image is stacked like an observation.
            info['goal'] = np.concatenate([info['goal']] * self.num_frames, axis=-1)
        return self.observation(), info

    def step(self, action):
        """Push the new observation onto the stack."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.frames.append(observation)
        return self.observation(), reward, terminated, truncated, info


def make_stacked_env(make_env: Callable[[], Any], num_frames: int | None) -> Any:
    """``make_env()`` in a ``FrameStack`` of ``num_frames`` (None: as it is).

    Module-level, so ``functools.partial(make_stacked_env, factory, k)`` is a picklable factory.
    """
    env = make_env()
    return env if num_frames is None else FrameStack(env, num_frames)
