"""The visual toy task: the state drawn as bars, readable after any crop; env and data agree."""

import numpy as np
import pytest
from pixel_reference import PADDING, reference_crop

from drol_jax import frames
from drol_jax.envs import toy, visual_toy


def read_states(images):
    """Invert ``draw_states``: a bar's height is the light summed down its middle column."""
    size = images.shape[1]
    _, full_height, columns = visual_toy.bar_geometry(size)
    heights = [
        images[:, :, (cols.start + cols.stop) // 2, bar].astype(np.float64).sum(axis=1) / 255.0
        for bar, cols in enumerate(columns)
    ]
    return np.stack(heights, axis=1) / full_height * 2.0 - 1.0


@pytest.mark.parametrize('size', [16, 32])
def test_the_state_can_be_read_back_after_any_crop(size):
    states = np.random.default_rng(0).uniform(-1, 1, (64, 2))
    images = visual_toy.draw_states(states, size)
    assert images.shape == (64, size, size, 3) and images.dtype == np.uint8
    _, full_height, _ = visual_toy.bar_geometry(size)
    tolerance = 2.0 / (255 * full_height)  # Half a grey level of the top pixel, in state units.
    np.testing.assert_allclose(read_states(images), states, atol=tolerance)
    for offset in [(0, 0), (0, 2 * PADDING), (2 * PADDING, 1), (PADDING, PADDING)]:
        cropped = reference_crop(images, np.tile(offset, (64, 1)))
        shifted = np.roll(cropped, (offset[0] - PADDING, offset[1] - PADDING), axis=(1, 2))
        np.testing.assert_allclose(read_states(shifted), states, atol=tolerance)
    assert not images[:, :, :, 2].any()  # Blue stays dark: one channel per coordinate.


def test_bars_keep_clear_of_the_border_and_each_shows_one_coordinate():
    images = visual_toy.draw_states(np.array([[1.0, -1.0], [1.0, 1.0]]))
    margin = visual_toy.MARGIN
    ring = np.ones(images.shape[1:3], bool)
    ring[margin:-margin, margin:-margin] = False
    assert not images[:, ring].any()
    np.testing.assert_array_equal(images[0, ..., 0], images[1, ..., 0])  # Same first coordinate.
    assert not images[0, ..., 1].any() and images[1, ..., 1].any()


def test_env_shows_the_state_and_scores_like_the_state_task():
    env, state_env = visual_toy.VisualToyEnv(), toy.ToyEnv('toy-multimodal')
    image, _ = env.reset(seed=3)
    state, _ = state_env.reset(seed=3)
    np.testing.assert_array_equal(image, visual_toy.draw_states(state[None])[0])
    assert env.observation_space.contains(image)
    action = np.array([0.6, 0.0], np.float32)
    _, reward, terminated, _, info = env.step(action)
    _, expected, _, _, expected_info = state_env.step(action)
    assert reward == expected and terminated and info == expected_info


def test_dataset_is_the_toy_dataset_drawn_and_stores_as_frames():
    dataset = visual_toy.make_dataset(size=200, seed=1, image_size=16)
    states = toy.TASKS['toy-multimodal'].make_dataset(200, 1)
    np.testing.assert_array_equal(dataset['actions'], states['actions'])
    np.testing.assert_array_equal(
        dataset['next_observations'], visual_toy.draw_states(states['next_observations'], 16)
    )
    stored = frames.from_transitions(dataset)
    assert stored.frames.shape == (400, 16, 16, 3)
    assert stored.nbytes == frames.dataset_bytes(400, (16, 16, 3), 200, 2)


def test_a_blind_policy_succeeds_about_one_time_in_five():
    assert 0.15 < visual_toy.blind_success_rate(num_states=500, grid=31) < 0.25
