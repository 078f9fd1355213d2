"""The toy task seen through pixels: its 2-D state drawn as a small image with numpy.

``visual-toy-multimodal`` is ``toy-multimodal`` (see ``drol_jax.envs.toy``) whose observation is
an RGB image instead of the state: a red bar whose height is the first state coordinate and a
green bar whose height is the second, on black. The reward depends on the first coordinate
only, so a policy must read the red bar's height; the green bar is a distractor. Heights are
drawn with an anti-aliased top pixel, so the state can be read back to within 1/255 of a pixel.

The bars keep a margin of ``MARGIN`` pixels from every border, more than the crop's padding:
a random crop (padding 3, edge mode) shifts the bars but never cuts them, and a bar's height
does not change with its position. Augmentation therefore keeps the information.

Episodes last one step, so a frame stack repeats the one image (clamped at the episode's start).
Only the 2-D task has a visual version: in the 1-D task a constant action already succeeds
everywhere, so pixels would add nothing to learn.

The family ``FAMILY`` registers the one name; its data is a ``FrameDataset`` made in memory
(the observation and next observation of a one-step episode are different images, so both are
kept: 2 frames per transition, 1.5 KB at 16x16).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from drol_jax import frames
from drol_jax.envs import toy
from drol_jax.envs.base import DataOptions, EnvBundle

IMAGE_SIZE = 16  # Pixels per side: 768 bytes per RGB frame, and cheap convolutions on a CPU.
MARGIN = 4  # Empty pixels between the bars and every border (> the crop's padding of 3).
TOY_TASK = 'toy-multimodal'  # The state-based task behind the visual one.
VISUAL_NAME = f'visual-{TOY_TASK}'


def bar_geometry(size: int) -> tuple[int, int, tuple[slice, slice]]:
    """(bottom row, full height in pixels, column ranges of the two bars) for ``size`` pixels."""
    if size < 2 * MARGIN + 6:
        raise ValueError(f'images must be at least {2 * MARGIN + 6} pixels wide, got {size}')
    inner = size - 2 * MARGIN
    width = inner // 3
    columns = (slice(MARGIN, MARGIN + width), slice(size - MARGIN - width, size - MARGIN))
    return size - MARGIN - 1, inner, columns


def draw_states(states: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Images (N, size, size, 3) uint8 of states (N, 2) in [-1, 1]: bar i's height is state i."""
    states = np.clip(np.asarray(states, np.float64), -1.0, 1.0)
    bottom, full_height, columns = bar_geometry(size)
    heights = (states + 1.0) / 2.0 * full_height  # (N, 2), in pixels.
    above_bottom = bottom - np.arange(size)  # Rows counted upwards from the bars' bottom row.
    # Each row is lit by the part of the bar that covers it: 1 below the top, a fraction at it.
    cover = np.clip(heights[:, :, None] - above_bottom[None, None, :], 0.0, 1.0)
    cover[:, :, above_bottom < 0] = 0.0  # The bottom margin stays dark.
    intensity = np.round(255.0 * cover).astype(np.uint8)  # (N, 2, size)
    images = np.zeros((len(states), size, size, 3), np.uint8)
    for bar, cols in enumerate(columns):
        images[:, :, cols, bar] = intensity[:, bar, :, None]
    return images


def make_dataset(
    size: int = toy.DATASET_SIZE, seed: int = toy.DATASET_SEED, image_size: int = IMAGE_SIZE
) -> dict[str, np.ndarray]:
    """The toy dataset with both observation arrays drawn as images (one-step episodes)."""
    dataset = toy.TASKS[TOY_TASK].make_dataset(size, seed)
    for key in ('observations', 'next_observations'):
        dataset[key] = draw_states(dataset[key], image_size)
    return dataset


class VisualToyEnv(gym.Env):
    """``ToyEnv`` observed through ``draw_states``: same states, actions, rewards and success."""

    def __init__(self, image_size: int = IMAGE_SIZE):
        self.image_size = image_size
        self.state_env = toy.ToyEnv(TOY_TASK)
        self.observation_space = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.action_space = self.state_env.action_space

    def reset(self, *, seed=None, options=None):
        """Draw a new state and show it."""
        state, info = self.state_env.reset(seed=seed, options=options)
        return draw_states(state[None], self.image_size)[0], info

    def step(self, action):
        """Score the action on the hidden state; the episode always ends."""
        state, reward, terminated, truncated, info = self.state_env.step(action)
        return draw_states(state[None], self.image_size)[0], reward, terminated, truncated, info


def blind_success_rate(num_states: int = 2000, grid: int = 61, seed: int = 0) -> float:
    """Success rate of the best policy that ignores the image: the best constant action.

    A policy that sees nothing can do no better than one fixed action (it cannot tell states
    apart); the best one on a ``grid`` x ``grid`` lattice of [-1, 1]^2 is kept. A policy that
    learns from pixels must clearly beat this rate.
    """
    task = toy.TASKS[TOY_TASK]
    states = task.sample_states(np.random.default_rng(seed), num_states)
    axis = np.linspace(-1.0, 1.0, grid)
    actions = np.stack(np.meshgrid(axis, axis, indexing='ij'), axis=-1).reshape(-1, 2)
    threshold = 0.5 * max(task.mode_values)
    rates = []
    for chunk in np.array_split(actions, max(1, len(actions) // 128)):
        rewards = task.reward(np.tile(states, (len(chunk), 1)), np.repeat(chunk, num_states, 0))
        rates.append((rewards.reshape(len(chunk), num_states) >= threshold).mean(axis=1))
    return float(np.concatenate(rates).max())


class VisualToyFamily(toy.ToyFamily):
    """Registry entry for ``visual-toy-multimodal`` (the toy family's rules, image data)."""

    name = 'visual-toy'

    def resolve(self, env_name: str) -> str | None:
        """The one name, canonical as typed."""
        return env_name if env_name == VISUAL_NAME else None

    def known_names(self) -> list[str]:
        """The one name."""
        return [VISUAL_NAME]

    def load(self, env_name: str, options: DataOptions) -> EnvBundle:
        """Draw the toy datasets (training and validation) in memory."""
        return EnvBundle(
            env_name=env_name,
            make_env=VisualToyEnv,
            train_dataset=frames.from_transitions(make_dataset(), env_name),
            val_dataset=frames.from_transitions(
                make_dataset(toy.DATASET_SIZE // 10, toy.DATASET_SEED + 1), f'{env_name} val'
            ),
            provenance={
                'source': 'toy',
                'seed': toy.DATASET_SEED,
                'size': toy.DATASET_SIZE,
                'image_size': IMAGE_SIZE,
            },
        )


FAMILY = VisualToyFamily()
