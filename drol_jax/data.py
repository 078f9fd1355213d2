"""Datasets as dicts of arrays, on-device batch sampling, and the online replay buffer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from drol_jax.envs.base import DATASET_KEYS
from drol_jax.errors import DatasetError

Batch = dict[str, jax.Array]


def check_dataset(dataset: dict[str, np.ndarray], where: str) -> None:
    """Raise ``DatasetError`` unless every key is present, finite and of one common length."""
    missing = [k for k in DATASET_KEYS if k not in dataset]
    if missing:
        raise DatasetError(f'{where}: dataset lacks {missing} (has {sorted(dataset)}).')
    lengths = {k: len(dataset[k]) for k in DATASET_KEYS}
    if len(set(lengths.values())) != 1:
        raise DatasetError(f'{where}: dataset arrays have different lengths {lengths}.')
    if lengths['observations'] == 0:
        raise DatasetError(f'{where}: dataset is empty.')
    for key in DATASET_KEYS:
        if not np.all(np.isfinite(dataset[key])):
            raise DatasetError(f'{where}: dataset array {key!r} has NaN or infinite values.')


def sample_indices(key: jax.Array, size: int, batch_size: int) -> jax.Array:
    """Uniform transition indices; the one definition both the fused and host loops use."""
    return jax.random.randint(key, (batch_size,), 0, size)


def gather(data, indices, size: int | None = None):
    """The transitions at ``indices`` of a dict of arrays (host numpy or device).

    Every array is indexed, and the batch also carries ``next_actions``: the action at the next
    index, clamped at the last of the first ``size`` rows (default: all). That is how the FQL
    codebase's dataset provides it: without regard to episode ends. It is built by index, so no
    second copy of the actions is kept, and agents that do not read it cost nothing in a
    compiled update (the unused gather is removed).
    """
    batch = jax.tree_util.tree_map(lambda x: x[indices], data)
    if 'actions' in data:
        last = len(data['actions']) - 1 if size is None else size - 1
        batch['next_actions'] = data['actions'][(indices + 1).clip(max=last)]
    return batch


def to_device(dataset: dict[str, np.ndarray]) -> Batch:
    """Copy the training arrays to the default device once, as float32."""
    return {k: jnp.asarray(dataset[k], dtype=jnp.float32) for k in DATASET_KEYS}


def random_transitions(size: int, obs_dim: int, action_dim: int, seed: int = 0) -> dict:
    """Random transitions in the dataset format (for timing and tests: values do not matter).

    Actions fill [-1, 1]; about 10% of transitions end an episode (mask 0).
    """
    rng = np.random.default_rng(seed)
    masks = (rng.uniform(size=size) > 0.1).astype(np.float32)
    return {
        'observations': rng.standard_normal((size, obs_dim)).astype(np.float32),
        'actions': rng.uniform(-1, 1, (size, action_dim)).astype(np.float32),
        'rewards': rng.standard_normal(size).astype(np.float32),
        'masks': masks,
        'terminals': 1.0 - masks,
        'next_observations': rng.standard_normal((size, obs_dim)).astype(np.float32),
    }


class ReplayBuffer:
    """Fixed-capacity ring buffer of transitions for online fine-tuning (host memory)."""

    def __init__(self, example: dict[str, np.ndarray], capacity: int):
        self.capacity = capacity
        self.arrays = {
            k: np.zeros((capacity, *np.shape(v)), np.float32) for k, v in example.items()
        }
        self.size = 0
        self.pointer = 0

    @classmethod
    def from_dataset(cls, dataset: dict[str, np.ndarray], capacity: int) -> ReplayBuffer:
        """A buffer that starts with a copy of ``dataset`` (FQL's non-balanced fine-tuning)."""
        length = len(dataset['observations'])
        buffer = cls({k: dataset[k][0] for k in DATASET_KEYS}, max(capacity, length + 1))
        for k in DATASET_KEYS:
            buffer.arrays[k][:length] = dataset[k]
        buffer.size = buffer.pointer = length
        return buffer

    def add(self, transition: dict[str, np.ndarray]) -> None:
        """Insert one transition, overwriting the oldest when full."""
        for k, v in transition.items():
            self.arrays[k][self.pointer] = v
        self.pointer = (self.pointer + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        """Uniform batch from the filled part of the buffer (next actions within it)."""
        return gather(self.arrays, rng.integers(self.size, size=batch_size), self.size)

    def state_dict(self) -> dict:
        """Everything needed to restore the buffer from a checkpoint."""
        filled = {k: v[: self.size] for k, v in self.arrays.items()}
        return {'arrays': filled, 'size': self.size, 'pointer': self.pointer}

    def load_state_dict(self, state: dict) -> None:
        """Restore a buffer saved by ``state_dict``."""
        self.size, self.pointer = int(state['size']), int(state['pointer'])
        for k, v in state['arrays'].items():
            self.arrays[k][: self.size] = v
