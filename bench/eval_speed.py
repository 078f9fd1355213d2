"""Evaluation speed on cube-single: sequential vs vectorized (env copies in worker processes).

It also holds the start-workers-per-call form of vectorized evaluation, which only this
benchmark and the tests (tests/test_speed.py) use.

The policy is a fixed random linear map, jitted and keyed by (episode, env step) like the
training loop's policy, so its cost per call is small and both paths play identical episodes.

    python bench/eval_speed.py            # 16 episodes of the env's normal length (200 steps)
    python bench/eval_speed.py --quick    # 4 episodes of 50 steps
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from drol_jax import evaluation  # noqa: E402

ENV_NAME = 'cube-single-play-singletask-v0'


def make_cube_env(max_episode_steps: int | None):
    """The OGBench evaluation env (module-level, so worker processes can unpickle it)."""
    import ogbench

    kwargs = {} if max_episode_steps is None else {'max_episode_steps': max_episode_steps}
    return ogbench.make_env_and_datasets(ENV_NAME, env_only=True, **kwargs)


def make_policy(obs_dim: int, action_dim: int) -> evaluation.Policy:
    """A jitted random linear policy plus latent noise keyed by (episode, env step).

    JAX is imported here, not at the top: spawned env workers re-import this script.
    """
    import jax
    import jax.numpy as jnp

    weights = jax.random.normal(jax.random.PRNGKey(0), (obs_dim, action_dim)) / np.sqrt(obs_dim)
    base_key = jax.random.PRNGKey(1)

    @jax.jit
    def actions(observations, episodes, steps):
        keys = jax.vmap(lambda e, t: jax.random.fold_in(jax.random.fold_in(base_key, e), t))(
            episodes, steps
        )
        noise = jax.vmap(lambda k: jax.random.normal(k, (action_dim,)))(keys)
        return jnp.clip(jnp.tanh(observations @ weights) + 0.3 * noise, -1, 1)

    return lambda o, e, t: np.asarray(actions(jnp.asarray(o, jnp.float32), e, t))


def run_episodes_vectorized(
    make_env: Callable[[], object],
    policy: evaluation.Policy,
    num_episodes: int,
    base_seed: int,
    num_envs: int,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Per-episode statistics from fresh workers (``evaluation.EnvWorkers.run_episodes``).

    Starting workers per call is what the "workers started per call" rows time; the training
    run keeps one ``EnvWorkers`` for all its evaluations.
    """
    if num_episodes <= 0:
        return []
    with evaluation.EnvWorkers(make_env, min(num_envs, num_episodes)) as workers:
        return workers.run_episodes(policy, num_episodes, base_seed, progress)


def evaluate_vectorized(
    make_env: Callable[[], object],
    policy: evaluation.Policy,
    num_episodes: int,
    base_seed: int,
    num_envs: int,
    normalize_score: Callable[[float], float] | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """``evaluation.evaluate_sequential``'s statistics from ``num_envs`` env copies in workers.

    Equal to the sequential result for a policy keyed by (episode, step): episodes are
    summarised in episode order, so even the float sums match.
    """
    episodes = run_episodes_vectorized(
        make_env, policy, num_episodes, base_seed, num_envs, progress
    )
    return evaluation.summarize(episodes, normalize_score)


def main(argv=None) -> None:
    """Time both evaluation paths and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='4 short episodes, 1 repetition')
    parser.add_argument('--episodes', type=int, default=48)
    parser.add_argument('--repeats', type=int, default=2, help='timed repetitions (median)')
    parser.add_argument('--num-envs', type=int, nargs='+', default=None)
    args = parser.parse_args(argv)
    max_steps = 50 if args.quick else None
    episodes, repeats = (4, 1) if args.quick else (args.episodes, args.repeats)
    cores = os.cpu_count() or 1
    # One copy per core, and all episodes at once (many copies per worker amortise the
    # parent's per-round work; bench/RESULTS.md).
    num_envs_list = args.num_envs or sorted({cores, 8 * cores, episodes})

    make_env = functools.partial(make_cube_env, max_steps)
    env = make_env()
    policy = make_policy(env.observation_space.shape[0], env.action_space.shape[0])
    evaluation.run_episode(env, policy, 0, 0)  # Compile the policy for batch 1.

    def vectorized(num_envs):
        return lambda: evaluate_vectorized(
            make_env, policy, episodes, 0, num_envs=num_envs, progress=False
        )

    def persistent(workers):
        return lambda: evaluation.summarize(workers.run_episodes(policy, episodes, 0, False))

    with contextlib.ExitStack() as stack:
        paths = [
            (
                'sequential',
                1,
                lambda: evaluation.evaluate_sequential(env, policy, episodes, 0, progress=False),
            )
        ]
        for num_envs in num_envs_list:
            zeros = np.zeros(num_envs, int)  # Compile the policy for this batch size.
            policy(np.zeros((num_envs, env.observation_space.shape[0])), zeros, zeros)
            workers = stack.enter_context(evaluation.EnvWorkers(make_env, num_envs))
            paths.append(('vectorized, workers started per call', num_envs, vectorized(num_envs)))
            paths.append(('vectorized, persistent workers', num_envs, persistent(workers)))
        # Repetitions interleave the paths so each sees the same mix of machine load.
        times, stats = [[] for _ in paths], [None] * len(paths)
        for _ in range(repeats):
            for index, (_, _, run) in enumerate(paths):
                started = time.perf_counter()
                stats[index] = run()
                times[index].append(time.perf_counter() - started)
    rows = [
        (name, num_envs, statistics.median(t), s)
        for (name, num_envs, _), t, s in zip(paths, times, stats, strict=True)
    ]
    reference = rows[0][3]

    base = rows[0][2]
    print(
        f'{ENV_NAME}: {episodes} episodes of {reference["episode.length"]:.0f} steps (mean), '
        f'{cores} cores, median of {repeats} interleaved repetitions'
    )
    print('| path | envs | seconds | episodes/s | speed-up | same stats as sequential |')
    print('|---|---|---|---|---|---|')
    for name, num_envs, seconds, stats in rows:
        print(
            f'| {name} | {num_envs} | {seconds:.2f} | {episodes / seconds:.2f} | '
            f'{base / seconds:.2f}x | {"yes" if stats == reference else "NO"} |'
        )


if __name__ == '__main__':
    main()
