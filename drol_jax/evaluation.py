"""Policy evaluation: episodes on a separate env, FQL's metric names, optional videos."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from tqdm.auto import tqdm

# policy(observations (B, obs_dim), episode_ids (B,), step_ids (B,)) -> actions (B, action_dim).
# Keying the policy's randomness by (episode, step) makes results independent of how episodes
# are spread over env copies.
Policy = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def episode_seed(base_seed: int, episode: int) -> int:
    """Env reset seed of an evaluation episode."""
    return base_seed * 100_003 + episode


def run_episode(env, policy: Policy, episode: int, base_seed: int, render_every: int = 0):
    """Play one episode; return its statistics and (if ``render_every``) rendered frames."""
    observation, _ = env.reset(seed=episode_seed(base_seed, episode))
    total_reward, length, frames, info, done = 0.0, 0, [], {}, False
    while not done:
        action = policy(observation[None], np.array([episode]), np.array([length]))[0]
        observation, reward, terminated, truncated, info = env.step(action)
        total_reward += float(reward)
        length += 1
        done = terminated or truncated
        if render_every and (length % render_every == 0 or done):
            frames.append(np.asarray(env.render()).copy())
    stats = {
        'episode.return': total_reward,
        'episode.length': length,
        'success': float(info.get('success', 0.0)),
    }
    return stats, frames


def summarize(
    episodes: list[dict[str, float]], normalize_score: Callable[[float], float] | None = None
) -> dict[str, float]:
    """Average per-episode statistics; add ``normalized_return`` when the task defines it."""
    summary = {k: float(np.mean([e[k] for e in episodes])) for k in episodes[0]}
    if normalize_score is not None:
        summary['normalized_return'] = float(
            np.mean([normalize_score(e['episode.return']) for e in episodes])
        )
    return summary


def evaluate_sequential(
    env,
    policy: Policy,
    num_episodes: int,
    base_seed: int,
    normalize_score: Callable[[float], float] | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Run ``num_episodes`` episodes one after another on one env."""
    episodes = [
        run_episode(env, policy, e, base_seed)[0]
        for e in tqdm(range(num_episodes), desc='evaluation', leave=False, disable=not progress)
    ]
    return summarize(episodes, normalize_score)


def record_videos(env, policy: Policy, num_episodes: int, base_seed: int, frame_skip: int):
    """Rendered frames of ``num_episodes`` extra episodes, or [] with a warning if rendering fails.

    Rendering needs a GL backend (``MUJOCO_GL=egl`` or ``osmesa`` on headless machines).
    """
    videos = []
    try:
        for e in range(num_episodes):
            # Video episodes use ids after the evaluation ones so they never repeat them.
            videos.append(run_episode(env, policy, 10**6 + e, base_seed, frame_skip)[1])
    except Exception as e:  # noqa: BLE001 - any renderer failure must not kill training.
        warnings.warn(
            f'video rendering failed ({type(e).__name__}: {e}); set MUJOCO_GL=egl or osmesa. '
            'Continuing without videos.',
            stacklevel=2,
        )
        return []
    return videos
