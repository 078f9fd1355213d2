"""A simulator-free offline task with multimodal dataset actions and a known reward.

Each state ``s`` (uniform in [-1, 1]^2) has ``M`` separated action clusters whose centres rotate
with ``s[0]``. The dataset picks a cluster uniformly and adds small Gaussian noise, so a policy
that regresses to the mean lands between clusters. Clusters have different values; the reward of
an action is the value of the nearest cluster times a Gaussian bump around its centre, so the best
action is the centre of cluster 0 and mean-seeking behaviour scores close to zero. Episodes last
one step, which makes the evaluation return the mean reward of the policy's actions.

Names: ``toy-multimodal`` (2-D actions, 3 clusters on a circle) and ``toy-multimodal-1d``
(1-D actions, 3 intervals).
"""

from __future__ import annotations

import dataclasses
import functools

import gymnasium as gym
import numpy as np

from drol_jax.envs.base import DataOptions, EnvBundle
from drol_jax.errors import ConfigError

OBS_DIM = 2
DATASET_SIZE = 10_000
DATASET_SEED = 0  # The dataset is part of the task's definition, so its seed is fixed.


@dataclasses.dataclass(frozen=True)
class ToyTask:
    """Geometry of one toy task."""

    action_dim: int
    mode_values: tuple[float, ...] = (1.0, 0.45, 0.2)
    mode_radius: float = 0.6  # 2-D: radius of the circle the centres sit on.
    mode_spacing: float = 0.7  # 1-D: distance between neighbouring interval centres.
    noise_std: float = 0.05  # Spread of dataset actions around a centre.
    reward_width: float = 0.15  # Width of the reward bump around a centre.

    @property
    def num_modes(self) -> int:
        """Number of action clusters per state."""
        return len(self.mode_values)

    def mode_centers(self, observations: np.ndarray) -> np.ndarray:
        """Cluster centres for a batch of states, shape (N, num_modes, action_dim)."""
        shift = observations[:, :1]  # (N, 1): the first state coordinate moves the clusters.
        index = np.arange(self.num_modes)[None, :]
        if self.action_dim == 1:
            centers = (index - (self.num_modes - 1) / 2) * self.mode_spacing + 0.1 * shift
            return centers[..., None]
        angle = 2 * np.pi * index / self.num_modes + 0.5 * np.pi * shift
        return self.mode_radius * np.stack([np.cos(angle), np.sin(angle)], axis=-1)

    def reward(self, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Known reward: value of the nearest cluster times a Gaussian bump around its centre."""
        sq_dist = np.sum((self.mode_centers(observations) - actions[:, None, :]) ** 2, axis=-1)
        bumps = np.asarray(self.mode_values)[None] * np.exp(-sq_dist / (2 * self.reward_width**2))
        return bumps.max(axis=-1)

    def sample_states(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Uniform states in [-1, 1]^OBS_DIM."""
        return rng.uniform(-1.0, 1.0, size=(n, OBS_DIM)).astype(np.float32)

    def make_dataset(self, size: int, seed: int) -> dict[str, np.ndarray]:
        """Offline dataset in FQL's format: one-step episodes, multimodal actions."""
        rng = np.random.default_rng(seed)
        observations = self.sample_states(rng, size)
        modes = rng.integers(self.num_modes, size=size)
        centers = self.mode_centers(observations)[np.arange(size), modes]
        actions = np.clip(centers + self.noise_std * rng.standard_normal(centers.shape), -1, 1)
        return {
            'observations': observations,
            'actions': actions.astype(np.float32),
            'rewards': self.reward(observations, actions).astype(np.float32),
            'masks': np.zeros(size, np.float32),
            'terminals': np.ones(size, np.float32),
            'next_observations': self.sample_states(rng, size),
        }


TASKS = {
    'toy-multimodal': ToyTask(action_dim=2),
    'toy-multimodal-1d': ToyTask(action_dim=1),
}


class ToyEnv(gym.Env):
    """One-step episodes: observe a state, act once, receive the known reward.

    ``info['success']`` is 1 when the action earns at least half of the best cluster's value,
    which only actions near the best cluster do.
    """

    def __init__(self, task_name: str):
        self.task = TASKS[task_name]
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (OBS_DIM,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.task.action_dim,), np.float32)
        self._state = np.zeros(OBS_DIM, np.float32)

    def reset(self, *, seed=None, options=None):
        """Draw a new state."""
        super().reset(seed=seed)
        self._state = self.task.sample_states(self.np_random, 1)[0]
        return self._state.copy(), {}

    def step(self, action):
        """Score the action; the episode always ends."""
        action = np.clip(np.asarray(action, np.float32).reshape(1, -1), -1, 1)
        reward = float(self.task.reward(self._state[None], action)[0])
        success = float(reward >= 0.5 * max(self.task.mode_values))
        return self._state.copy(), reward, True, False, {'success': success}


class ToyFamily:
    """Registry entry for the toy tasks."""

    name = 'toy'

    def resolve(self, env_name: str) -> str | None:
        """Toy names are canonical as typed."""
        return env_name if env_name in TASKS else None

    def known_names(self) -> list[str]:
        """All toy task names."""
        return list(TASKS)

    def task_family(self, canonical_name: str) -> str:
        """Each toy task is its own family."""
        return canonical_name

    def check_options(self, options: DataOptions) -> None:
        """Refuse ``--dataset_path``: the toy data is made in memory, a file would be ignored."""
        if options.dataset_path:
            raise ConfigError(
                f'--dataset_path={options.dataset_path} does not apply to the toy tasks (their '
                'data is made in memory): drop it, or choose an OGBench or D4RL --env_name.'
            )

    def load(self, env_name: str, options: DataOptions) -> EnvBundle:
        """Build the dataset in memory; the toy task needs no file."""
        task = TASKS[env_name]
        return EnvBundle(
            env_name=env_name,
            make_env=functools.partial(ToyEnv, env_name),
            train_dataset=task.make_dataset(DATASET_SIZE, DATASET_SEED),
            val_dataset=task.make_dataset(DATASET_SIZE // 10, DATASET_SEED + 1),
            provenance={'source': 'toy', 'seed': DATASET_SEED, 'size': DATASET_SIZE},
        )


FAMILY = ToyFamily()
