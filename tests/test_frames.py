"""Frames stored once; on-device frame stacks and crops against the host reference of FQL's."""

import functools

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import ogbench.utils
import pytest
from pixel_reference import PADDING, episode_initial_indices, reference_batch

from drol_jax import frames
from drol_jax.envs.frame_stack import make_stacked_env
from drol_jax.errors import DatasetError

EPISODE_LENGTHS = (1, 2, 5, 3, 4)  # Transitions per episode: one-step episodes included.
FRAME_SHAPE = (6, 5, 2)  # Height != width, so a swapped axis shows.
ACTION_DIM = 2
NUM_FRAMES = sum(EPISODE_LENGTHS) + len(EPISODE_LENGTHS)  # One more frame than steps each.

batch_at = jax.jit(frames.batch_at, static_argnums=2)
sample_batch = jax.jit(frames.sample_batch, static_argnums=(2, 3, 4))


def stored_episodes(lengths=EPISODE_LENGTHS, seed=0):
    """An OGBench-layout file's arrays: every frame of each episode, terminal on its last."""
    rng = np.random.default_rng(seed)
    num_frames = sum(lengths) + len(lengths)
    terminals = np.zeros(num_frames, np.float32)
    terminals[np.cumsum(np.asarray(lengths) + 1) - 1] = 1.0
    return {
        'observations': rng.integers(0, 256, (num_frames, *FRAME_SHAPE), dtype=np.uint8),
        'actions': rng.uniform(-1, 1, (num_frames, ACTION_DIM)).astype(np.float32),
        'terminals': terminals,
    }


@pytest.fixture(scope='module')
def stored(tmp_path_factory):
    """(path of the stored file, its regular load, its frame dataset) through ogbench's loader."""
    path = str(tmp_path_factory.mktemp('visual') / 'visual-test-play-v0.npz')
    np.savez_compressed(path, **stored_episodes())
    regular = ogbench.utils.load_dataset(path, ob_dtype=np.uint8)
    compact = ogbench.utils.load_dataset(path, ob_dtype=np.uint8, compact_dataset=True)
    # Per-frame rewards and masks, as ogbench's single-task relabelling gives them.
    row = np.arange(len(compact['observations']), dtype=np.float32)
    compact['rewards'], compact['masks'] = row, (row % 3 > 0).astype(np.float32)
    valid = compact['valids'] > 0
    regular['rewards'], regular['masks'] = row[valid], compact['masks'][valid]
    return path, regular, frames.from_compact(compact)


def test_compact_layout_stores_each_frame_once_and_gives_ogbench_transitions(stored):
    _, regular, dataset = stored
    assert dataset.frames.shape[0] == NUM_FRAMES
    assert dataset.size == len(regular['observations']) == sum(EPISODE_LENGTHS)
    batch = batch_at(jax.device_put(dataset), np.arange(dataset.size), None)
    for key, value in regular.items():
        np.testing.assert_array_equal(np.asarray(batch[key]), value, err_msg=key)
    # Next actions as the state data's batches carry them: the next row's, clamped at the end.
    following = np.minimum(np.arange(dataset.size) + 1, dataset.size - 1)
    np.testing.assert_array_equal(batch['next_actions'], regular['actions'][following])
    assert batch['observations'].dtype == jnp.uint8


@pytest.mark.parametrize('frame_stack', [1, 3, 6])
def test_frame_stack_matches_reference_across_episode_boundaries(stored, frame_stack):
    _, regular, dataset = stored
    idxs = np.arange(dataset.size)  # Every transition: each episode's first steps are clamped.
    batch = batch_at(jax.device_put(dataset), idxs, frame_stack)
    expected = reference_batch(regular, idxs, frame_stack)
    assert batch['observations'].shape == (dataset.size, 6, 5, 2 * frame_stack)
    for key in ('observations', 'next_observations', 'rewards', 'actions'):
        np.testing.assert_array_equal(np.asarray(batch[key]), expected[key], err_msg=key)


def test_crop_matches_reference_with_one_position_per_sample(stored):
    _, regular, dataset = stored
    rng = np.random.default_rng(1)
    idxs = rng.integers(dataset.size, size=40)
    offsets = rng.integers(0, 2 * PADDING + 1, (40, 2))
    batch = batch_at(jax.device_put(dataset), idxs, 3, offsets)
    expected = reference_batch(regular, idxs, 3, crop_froms=offsets)
    for key in ('observations', 'next_observations'):
        np.testing.assert_array_equal(np.asarray(batch[key]), expected[key], err_msg=key)
    identity = batch_at(jax.device_put(dataset), idxs, 3, np.full((40, 2), PADDING))
    np.testing.assert_array_equal(
        identity['observations'], reference_batch(regular, idxs, 3)['observations']
    )


def test_host_dataset_gives_the_same_batch_as_the_device(stored):
    _, _, dataset = stored
    idxs, offsets = np.array([0, 3, 7, 14]), np.array([[0, 6], [3, 3], [6, 0], [2, 5]])
    on_host = frames.batch_at(dataset, idxs, 3, offsets)
    on_device = batch_at(jax.device_put(dataset), idxs, 3, offsets)
    for key, value in on_device.items():
        np.testing.assert_array_equal(np.asarray(on_host[key]), np.asarray(value), err_msg=key)


@pytest.mark.parametrize('p_aug', [None, 1.0])
def test_sampled_batch_is_built_inside_jit_with_fqls_augmentation(stored, p_aug):
    _, regular, dataset = stored
    device_data, key = jax.device_put(dataset), jax.device_put(jax.random.PRNGKey(3))
    sample_batch(device_data, key, 64, 3, p_aug)  # Compile first: then no transfer may happen.
    with jax.transfer_guard('disallow'):
        batch = sample_batch(device_data, key, 64, 3, p_aug)
        jax.block_until_ready(batch)
    index_key, augment_key = jax.random.split(key)
    idxs = np.asarray(frames.sample_indices(index_key, dataset.size, 64))
    offsets = np.asarray(frames.crop_offsets(augment_key, 64, 1.0)) if p_aug else None
    if offsets is not None:
        assert len({tuple(o) for o in offsets}) > 1  # One position per sample.
    expected = reference_batch(regular, idxs, 3, crop_froms=offsets)
    for key_name in ('observations', 'next_observations', 'actions'):
        np.testing.assert_array_equal(np.asarray(batch[key_name]), expected[key_name])


def test_augmentation_is_decided_once_per_batch_with_probability_p_aug():
    keys = jax.random.split(jax.random.PRNGKey(0), 600)
    p_aug = np.repeat([0.0, 0.3, 1.0], 200)
    draw = jax.jit(jax.vmap(lambda key, p: frames.crop_offsets(key, 16, p)))
    offsets = np.asarray(draw(keys, p_aug))
    identity = np.all(offsets == PADDING, axis=(1, 2))  # The whole batch left as it is.
    rate = (~identity).reshape(3, 200).mean(axis=1)
    assert rate[0] == 0 and 0.2 < rate[1] < 0.4 and rate[2] > 0.95
    # An augmented batch draws one position per sample: they differ within the batch.
    assert all(len(np.unique(batch, axis=0)) > 1 for batch in offsets[~identity])
    assert offsets.min() == 0 and offsets.max() == 2 * PADDING


def test_episode_starts_agree_with_fqls_search():
    rng = np.random.default_rng(0)
    terminals = (rng.uniform(size=300) < 0.1).astype(np.float32)
    terminals[-1] = 1.0
    np.testing.assert_array_equal(
        frames.episode_starts(terminals), episode_initial_indices(terminals)
    )
    # Without a final terminal the last steps form their own episode (FQL's search would put
    # them in the episode before): a stack never crosses an episode's end.
    np.testing.assert_array_equal(frames.episode_starts(np.array([0, 1, 0, 0])), [0, 0, 2, 2])


def test_one_step_episodes_keep_both_images():
    rng = np.random.default_rng(0)
    dataset = {
        'observations': rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8),
        'next_observations': rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8),
        'actions': np.zeros((5, 1), np.float32),
        'rewards': np.arange(5, dtype=np.float32),
        'masks': np.zeros(5, np.float32),
        'terminals': np.ones(5, np.float32),
    }
    stored = frames.from_transitions(dataset)
    assert stored.frames.shape == (10, 4, 4, 3)
    batch = batch_at(jax.device_put(stored), np.arange(5), 2)
    expected = reference_batch(dataset, np.arange(5), 2)
    for key in ('observations', 'next_observations', 'rewards'):
        np.testing.assert_array_equal(np.asarray(batch[key]), expected[key])


@pytest.mark.parametrize(
    ('change', 'message'),
    [
        ({'observations': np.zeros((NUM_FRAMES, *FRAME_SHAPE), np.float32)}, 'uint8'),
        ({'valids': np.ones(NUM_FRAMES)}, 'no next frame'),
        ({'rewards': np.full(NUM_FRAMES, np.nan)}, 'NaN'),
        ({'valids': np.zeros(NUM_FRAMES)}, 'no transitions'),
    ],
)
def test_a_broken_dataset_is_refused(change, message):
    compact = stored_episodes()
    compact['valids'] = 1.0 - compact['terminals']
    compact['rewards'] = compact['masks'] = np.ones(NUM_FRAMES)
    frames.from_compact(compact)
    with pytest.raises(DatasetError, match=message):
        frames.from_compact({**compact, **change})


def test_memory_figure_of_a_stored_visual_dataset(stored):
    path, regular, dataset = stored
    needed = frames.stored_dataset_bytes(path)
    assert needed == dataset.nbytes
    frame_bytes = int(np.prod(FRAME_SHAPE))
    per_transition = 3 * 4 + 4 * (ACTION_DIM + 3)
    assert needed == dataset.frames.shape[0] * frame_bytes + dataset.size * per_transition
    # 1000 OGBench episodes of 1000 steps at 64x64x3: about 12.3 GB, not 24.6 GB.
    published = frames.dataset_bytes(1_001_000, (64, 64, 3), 1_000_000, 5)
    assert 12.3e9 < published < 12.4e9
    assert published < 0.51 * 2 * 1_000_000 * 64 * 64 * 3


class FakeAccelerator:
    """A device that reports its allocator like a GPU does."""

    def __init__(self, limit, in_use):
        self.stats = {'bytes_limit': limit, 'bytes_in_use': in_use}

    def memory_stats(self):
        return self.stats

    def __str__(self):
        return 'cuda:0'


def test_a_dataset_that_does_not_fit_is_refused_naming_both_figures():
    frames.check_fits(1000, [FakeAccelerator(10_000, 1000)], reserve=0)
    with pytest.raises(DatasetError) as error:
        frames.check_fits(9500, [FakeAccelerator(10_000, 1000)], reserve=0, what='visual-cube')
    message = str(error.value)
    assert 'visual-cube needs' in message and '9500 bytes' in message
    assert '9000 bytes' in message and 'cuda:0' in message
    # The CPU reports no allocator: the host's available memory is the figure.
    free, source = frames.available_bytes(jax.devices('cpu')[0])
    assert free > 0 and 'host memory' in source
    with pytest.raises(DatasetError, match='host memory'):
        frames.check_fits(free * 4, jax.devices('cpu'))


class ReplayEnv(gym.Env):
    """Plays back one stored episode's frames, whatever the actions."""

    def __init__(self, episode_frames):
        self.episode_frames = episode_frames
        self.observation_space = gym.spaces.Box(0, 255, episode_frames.shape[1:], np.uint8)
        self.action_space = gym.spaces.Box(-1, 1, (ACTION_DIM,), np.float32)

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return self.episode_frames[0], {}

    def step(self, action):
        self.t += 1
        done = self.t == len(self.episode_frames) - 1
        return self.episode_frames[self.t], 0.0, done, False, {}


def test_evaluation_stacks_equal_the_training_stacks(stored):
    _, _, dataset = stored
    # The third episode (5 steps): its frames follow the 2 + 3 frames of the first two.
    first_frame = sum(n + 1 for n in EPISODE_LENGTHS[:2])
    length = EPISODE_LENGTHS[2]
    env = make_stacked_env(
        functools.partial(ReplayEnv, dataset.frames[first_frame : first_frame + length + 1]), 3
    )
    assert env.observation_space.shape == (6, 5, 6)
    transitions = np.arange(length) + EPISODE_LENGTHS[0] + EPISODE_LENGTHS[1]
    batch = batch_at(jax.device_put(dataset), transitions, 3)
    observation, _ = env.reset()
    for t in range(length):
        np.testing.assert_array_equal(observation, batch['observations'][t])
        observation, *_ = env.step(np.zeros(ACTION_DIM))
        np.testing.assert_array_equal(observation, batch['next_observations'][t])
