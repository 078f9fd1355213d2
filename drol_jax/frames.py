"""Image datasets with each frame stored once; stacked, cropped batches built on the device.

A visual dataset of N transitions stores its uint8 frames once, as ``(num_frames, H, W, C)``,
beside small index arrays: the frame of each transition's observation and next observation, and
the first transition of its episode. OGBench stores an episode of T transitions as its T + 1
frames (``ogbench.utils.load_dataset`` derives ``next_observations`` by shifting them), so the
frames of 1000 episodes of 1000 steps take 1001 * 1000 * 12288 bytes = 12.3 GB at 64x64x3, where
separate ``observations`` and ``next_observations`` arrays would take 24.6 GB.

Batches follow FQL's semantics (its ``Dataset.sample`` and ``augment``):

- frame stack k: the observation of transition t is the channel concatenation of the frames of
  transitions t-k+1, ..., t, each index clamped at t's episode's first transition; the next
  observation is that of t-k+2, ..., t followed by t's next frame;
- augmentation with probability ``p_aug``, decided once per batch: a random crop of every image
  after padding 3 pixels on each side by repeating the edge, one crop position per sample,
  the same for its observation and its next observation.

Everything is a pure function of arrays, so it runs inside the compiled update block: indices,
gather, stack and crop happen on the device, with no host round trip.
"""

from __future__ import annotations

import os
import zipfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from drol_jax.data import sample_indices
from drol_jax.envs.base import DATASET_KEYS
from drol_jax.errors import DatasetError

CROP_PADDING = 3  # Pixels of edge padding before the random crop (FQL's value).
# The batch keys other than the two observations: one row per transition.
TRANSITION_KEYS = tuple(k for k in DATASET_KEYS if not k.endswith('observations'))
INDEX_BYTES = 3 * 4  # Three int32 indices per transition: observation, next frame, episode start.
DEVICE_RESERVE_BYTES = 1 << 30  # Left free beside the data for parameters and activations.


class FrameDataset(NamedTuple):
    """Frames stored once plus per-transition indices and arrays (a pytree: jit and shard it).

    Attributes:
        frames: uint8 images, (num_frames, H, W, C).
        observation_frames: int32 (N,), the frame of each transition's observation.
        next_observation_frames: int32 (N,), the frame of each transition's next observation.
        episode_starts: int32 (N,), the first transition of each transition's episode.
        transitions: float32 arrays of length N: actions, rewards, masks, terminals.
    """

    frames: np.ndarray | jax.Array
    observation_frames: np.ndarray | jax.Array
    next_observation_frames: np.ndarray | jax.Array
    episode_starts: np.ndarray | jax.Array
    transitions: dict[str, np.ndarray | jax.Array]

    @property
    def size(self) -> int:
        """Number of transitions."""
        return int(self.observation_frames.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of every array: what the dataset occupies on a device."""
        return sum(
            int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(self)
        )

    def describe(self) -> str:
        """What the dataset holds and occupies, in words (printed at the start of a run)."""
        return (
            f'{self.size} transitions, {self.frames.shape[0]} frames of {self.frames.shape[1:]} '
            f'{self.frames.dtype} stored once, {self.nbytes / 1e9:.2f} GB per device; stacks '
            'and crops are built on the device'
        )


def episode_starts(terminals: np.ndarray) -> np.ndarray:
    """First transition of each transition's episode; an episode ends at a nonzero terminal.

    FQL's ``Dataset`` agrees on every dataset whose last transition is terminal (every OGBench
    load is); it would assign transitions after a final terminal to the episode before it.
    """
    index = np.arange(len(terminals))
    begins = np.zeros(len(terminals), bool)
    begins[0] = True
    begins[1:] = np.asarray(terminals)[:-1] > 0
    return np.maximum.accumulate(np.where(begins, index, 0)).astype(np.int32)


def _checked(frames, observation_frames, next_observation_frames, transitions, where):
    """A ``FrameDataset`` of these arrays, or ``DatasetError`` naming what is wrong."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise DatasetError(
            f'{where}: image observations must be uint8 of shape (N, H, W, C); got '
            f'{frames.dtype} {frames.shape}.'
        )
    missing = [k for k in TRANSITION_KEYS if k not in transitions]
    if missing:
        raise DatasetError(f'{where}: dataset lacks {missing} (has {sorted(transitions)}).')
    if len(observation_frames) == 0:
        raise DatasetError(f'{where}: dataset has no transitions.')
    if np.max(next_observation_frames) >= len(frames):
        raise DatasetError(f'{where}: its last frame starts a transition but has no next frame.')
    per_transition = {k: np.asarray(transitions[k], np.float32) for k in TRANSITION_KEYS}
    bad = [k for k, v in per_transition.items() if not np.all(np.isfinite(v))]
    if bad:
        raise DatasetError(f'{where}: dataset arrays {bad} have NaN or infinite values.')
    return FrameDataset(
        frames=frames,
        observation_frames=np.asarray(observation_frames, np.int32),
        next_observation_frames=np.asarray(next_observation_frames, np.int32),
        episode_starts=episode_starts(per_transition['terminals']),
        transitions=per_transition,
    )


def from_compact(dataset: dict[str, np.ndarray], where: str = 'dataset') -> FrameDataset:
    """A frame dataset from OGBench's compact layout (``compact_dataset=True``).

    There every array has one row per stored frame, and ``valids`` is 0 on each episode's last
    frame, which starts no transition. The transitions are the valid rows, in order; the next
    observation of a valid row is the following frame. Rewards and masks relabelled per row
    (as ``ogbench`` does for single-task names) are kept for the valid rows. The transitions
    then equal those of OGBench's regular layout, without a second copy of the frames.
    """
    valid = np.flatnonzero(np.asarray(dataset['valids']) > 0)
    transitions = {k: np.asarray(dataset[k])[valid] for k in TRANSITION_KEYS if k in dataset}
    return _checked(dataset['observations'], valid, valid + 1, transitions, where)


def from_transitions(dataset: dict[str, np.ndarray], where: str = 'dataset') -> FrameDataset:
    """A frame dataset from separate ``observations`` and ``next_observations`` image arrays.

    For data whose next observations are not the following rows' observations (one-step
    episodes, say): both arrays are kept, as frames 0..N-1 and N..2N-1.
    """
    observations = np.asarray(dataset['observations'])
    size = len(observations)
    frames = np.concatenate([observations, np.asarray(dataset['next_observations'])])
    index = np.arange(size)
    return _checked(frames, index, size + index, dataset, where)


def to_device(dataset: FrameDataset, device: jax.Device | None = None) -> FrameDataset:
    """Copy a frame dataset to a device once (uint8 frames stay uint8)."""
    return jax.device_put(dataset, device)


# ---------------------------------------------------------------------------------------------
# Batches, inside jit.


def _take(array, indices):
    """``array[indices]`` on the array's side: a host array sends only the selected rows."""
    if isinstance(array, np.ndarray):
        return jnp.asarray(array[np.asarray(indices)])
    return array[indices]


def stacked_frame_ids(dataset: FrameDataset, indices, frame_stack: int | None):
    """Frame ids (B, k + 1): the k frames of each observation, then its next frame.

    The observation stack is columns 0..k-1 and the next observation's stack columns 1..k.
    ``frame_stack`` None means single frames (k = 1).
    """
    k = frame_stack or 1
    back = jnp.arange(k - 1, -1, -1)  # k-1, ..., 0 steps back: oldest frame first.
    starts = _take(dataset.episode_starts, indices)
    earlier = jnp.maximum(indices[:, None] - back[None, :], starts[:, None])
    last = _take(dataset.next_observation_frames, indices)[:, None]
    return jnp.concatenate([_take(dataset.observation_frames, earlier), last], axis=1)


def crop(images, offsets, padding: int = CROP_PADDING):
    """Crop each sample's images at its (row, column) offset after edge padding.

    ``images`` is (B, ..., H, W, C) and ``offsets`` (B, 2) in [0, 2 * padding]; every image of a
    sample gets the same crop. The offset (padding, padding) returns the images unchanged.
    """
    pad = [(0, 0)] * (images.ndim - 3) + [(padding, padding), (padding, padding), (0, 0)]
    padded = jnp.pad(images, pad, mode='edge')
    size = images.shape[1:]
    lead = images.ndim - 4  # Axes between the batch axis and the image (the frame axis).

    def one(sample, offset):
        start = (*(0,) * lead, offset[0], offset[1], 0)
        return jax.lax.dynamic_slice(sample, start, size)

    return jax.vmap(one)(padded, offsets)


def crop_offsets(key, batch_size: int, p_aug: float):
    """Per-sample crop offsets for one batch: random with probability ``p_aug``, else identity."""
    apply_key, offset_key = jax.random.split(key)
    offsets = jax.random.randint(offset_key, (batch_size, 2), 0, 2 * CROP_PADDING + 1)
    apply = jax.random.uniform(apply_key) < p_aug
    return jnp.where(apply, offsets, CROP_PADDING)


def _channels_last(frames):
    """(B, k, H, W, C) -> (B, H, W, k * C): the frames concatenated on channels, oldest first."""
    b, k, h, w, c = frames.shape
    return jnp.moveaxis(frames, 1, 3).reshape(b, h, w, k * c)


def batch_at(dataset: FrameDataset, indices, frame_stack: int | None, offsets=None) -> dict:
    """The batch of transitions ``indices``: stacked (and, given ``offsets``, cropped) images.

    With device arrays (inside jit) everything runs on the device. With a host dataset the
    function runs eagerly and only the batch's frames leave host memory.
    """
    indices = jnp.asarray(indices)
    frames = _take(dataset.frames, stacked_frame_ids(dataset, indices, frame_stack))
    if offsets is not None:
        frames = crop(frames, offsets)
    batch = {k: _take(v, indices) for k, v in dataset.transitions.items()}
    # As the state data's batches (``drol_jax.data.gather``): the next row's action.
    batch['next_actions'] = _take(
        dataset.transitions['actions'], (indices + 1).clip(max=dataset.size - 1)
    )
    batch['observations'] = _channels_last(frames[:, :-1])
    batch['next_observations'] = _channels_last(frames[:, 1:])
    return batch


def sample_batch(
    dataset: FrameDataset, key, batch_size: int, frame_stack: int | None, p_aug: float | None
) -> dict:
    """A uniform batch with FQL's frame stacking and augmentation (``p_aug`` None: never).

    ``functools.partial(sample_batch, frame_stack=k, p_aug=p)`` is the sampler of a compiled
    update block (``drol_jax.updates.make_train_block``).
    """
    index_key, augment_key = jax.random.split(key)
    indices = sample_indices(index_key, dataset.size, batch_size)
    offsets = crop_offsets(augment_key, batch_size, p_aug) if p_aug else None
    return batch_at(dataset, indices, frame_stack, offsets)


# ---------------------------------------------------------------------------------------------
# Memory: what a dataset needs on the device, and whether the device has it.


def dataset_bytes(num_frames: int, frame_shape, num_transitions: int, action_dim: int) -> int:
    """Device bytes of a frame dataset: uint8 frames, int32 indices, float32 transitions."""
    per_transition = INDEX_BYTES + 4 * (action_dim + len(TRANSITION_KEYS) - 1)
    return num_frames * int(np.prod(frame_shape)) + num_transitions * per_transition


def _npy_header(archive: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], np.dtype]:
    with archive.open(f'{key}.npy') as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0
        if version != (1, 0):
            read = np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return shape, dtype


def stored_dataset_bytes(path: str) -> int:
    """Device bytes of a stored OGBench visual dataset (``.npz``), without loading its frames.

    The file holds every frame of its episodes and one terminal per frame; each episode gives one
    transition fewer than its frames.
    """
    path = os.path.expanduser(path)
    try:
        with zipfile.ZipFile(path) as archive:
            frame_shape, _ = _npy_header(archive, 'observations')
            action_shape, _ = _npy_header(archive, 'actions')
        with np.load(path) as data:
            episodes = int(np.count_nonzero(data['terminals']))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise DatasetError(f'Cannot read the dataset {path}: {error}') from error
    num_frames = frame_shape[0]
    return dataset_bytes(num_frames, frame_shape[1:], num_frames - episodes, action_shape[-1])


def available_bytes(device: jax.Device) -> tuple[int, str]:
    """Free bytes on ``device`` and where the figure comes from.

    Accelerators report their allocator's limit and use (JAX's memory pool: by default 75% of
    the card, ``XLA_PYTHON_CLIENT_MEM_FRACTION`` changes it). The CPU reports nothing: its
    arrays live in host memory, and copying a dataset there makes a second copy in RAM, so the
    figure is the memory the operating system says is available.
    """
    stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
    if stats and 'bytes_limit' in stats:
        free = int(stats['bytes_limit']) - int(stats.get('bytes_in_use', 0))
        return free, f"JAX's memory pool on {device}"
    try:
        with open('/proc/meminfo') as f:
            fields = dict(line.split(':', 1) for line in f)
        return int(fields['MemAvailable'].split()[0]) * 1024, 'host memory (MemAvailable)'
    except (OSError, KeyError, ValueError):
        pages = os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
        return int(pages), 'host memory (free pages)'


def _gb(num_bytes: int) -> str:
    return f'{num_bytes / 1e9:.2f} GB'


def check_fits(
    needed: int, devices=None, reserve: int = DEVICE_RESERVE_BYTES, what: str = 'the dataset'
) -> None:
    """Raise ``DatasetError`` unless ``needed`` bytes plus ``reserve`` fit on every device.

    Each device that trains seeds holds a full copy of the data, so each must have room.
    """
    for device in devices or jax.local_devices()[:1]:
        free, source = available_bytes(device)
        if needed + reserve > free:
            raise DatasetError(
                f'{what} needs {_gb(needed)} ({needed} bytes) on {device}, plus '
                f'{_gb(reserve)} for the networks, but {source} has {_gb(free)} '
                f'({free} bytes) available. Use a device with more memory, or a smaller dataset.'
            )
