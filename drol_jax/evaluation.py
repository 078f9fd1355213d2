"""Policy evaluation: episodes on a separate env, FQL's metric names, optional videos.

One env in-process (``evaluate_sequential``) or env copies in worker processes stepped in
lockstep (``EnvWorkers``, ``--eval_num_envs``), with the same statistics either way.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from drol_jax import seeding
from drol_jax.cli import print_warning
from drol_jax.seeding import episode_seed

# policy(observations (B, obs_dim), episode_ids (B,), step_ids (B,)) -> actions (B, action_dim).
# Keying the policy's randomness by (episode, step) makes results independent of how episodes
# are spread over env copies.
Policy = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _episode_bar(total: int, progress: bool):
    """The evaluation's progress bar, nested under the training bar: terminals only.

    Written to a file (a redirected log), a nested bar leaves cursor-movement fragments.
    """
    return tqdm(
        total=total, desc='evaluation', leave=False, disable=not (progress and sys.stderr.isatty())
    )


def video_frame(env, observation: np.ndarray) -> np.ndarray:
    """What a video shows: an image observation's newest RGB frame, else the env's render.

    Image observations are the frames the policy sees (stacks end with the newest), so a video
    of a visual task costs no second rendering.
    """
    if observation.dtype == np.uint8 and observation.ndim == 3:
        return observation[..., -3:].copy()
    return np.asarray(env.render()).copy()


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
            frames.append(video_frame(env, observation))
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
    episodes = []
    with _episode_bar(num_episodes, progress) as bar:
        for episode in range(num_episodes):
            episodes.append(run_episode(env, policy, episode, base_seed)[0])
            bar.update(1)
    return summarize(episodes, normalize_score)


def _render_probe(make_env, connection) -> None:
    """Child-process body: render one frame; send back None, or why it failed, in one line.

    The child's stderr goes to /dev/null: a failing GL backend prints pages of its own.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        env = make_env()
        env.reset(seed=0)
        frame = np.asarray(env.render())
        reason = None if frame.ndim == 3 else f'render() returned shape {frame.shape}'
    except BaseException as e:  # noqa: BLE001 - any failure means "cannot render here".
        reason = f'{type(e).__name__}: {e}'.splitlines()[0] if str(e) else type(e).__name__
    connection.send(reason)


def render_problem(make_env) -> str | None:
    """Why the env cannot render (one line), or None if it can; tried in a spawned process.

    A missing display or GL library can abort the whole process (GLFW without X, a broken EGL),
    which no exception handler catches, so the first render is tried where a crash is harmless.
    """
    import multiprocessing

    context = multiprocessing.get_context('spawn')
    parent, child = context.Pipe(duplex=False)
    probe = context.Process(target=_render_probe, args=(make_env, child))
    probe.start()
    child.close()
    reason = 'the render probe crashed'
    if parent.poll(120):
        with contextlib.suppress(EOFError):
            reason = parent.recv()
    else:
        reason = 'the render probe did not answer within 120 s'
    probe.join(timeout=10)
    if probe.is_alive():
        probe.kill()
    return reason


def record_videos(env, policy: Policy, num_episodes: int, base_seed: int, frame_skip: int):
    """Rendered frames of ``num_episodes`` extra episodes.

    The caller checks ``render_problem`` first; rendering needs a GL backend on headless
    machines (``MUJOCO_GL=egl`` or ``osmesa``).
    """
    # Video episodes use ids after the evaluation ones so they never repeat them.
    return [
        run_episode(env, policy, 10**6 + e, base_seed, frame_skip)[1] for e in range(num_episodes)
    ]


def _env_worker(connection, make_env, num_envs: int) -> None:
    """Serve ``reset``/``step``/``close`` commands for ``num_envs`` env copies over a pipe.

    ``reset`` takes ``[(local index, seed), ...]``, ``step`` takes ``[(local index, action), ...]``;
    replies are ``('ok', [result per item])`` or ``('error', traceback text)``, so a failing env
    surfaces as an exception in the parent instead of a hung pipe.
    """
    import traceback

    envs = []
    try:
        envs = [make_env() for _ in range(num_envs)]
        connection.send(('ok', None))
        while True:
            command, items = connection.recv()
            if command == 'reset':
                connection.send(('ok', [envs[i].reset(seed=seed)[0] for i, seed in items]))
            elif command == 'step':
                results = []
                for i, action in items:
                    observation, reward, terminated, truncated, info = envs[i].step(action)
                    success = float(info.get('success', 0.0))
                    results.append((observation, reward, terminated, truncated, success))
                connection.send(('ok', results))
            else:  # 'close'
                break
    except (EOFError, KeyboardInterrupt):
        pass  # The parent went away or was interrupted: just exit.
    except Exception:  # noqa: BLE001 - report any env failure to the parent.
        connection.send(('error', traceback.format_exc()))
    finally:
        for env in envs:
            env.close()
        connection.close()


class EnvWorkers:
    """``num_envs`` copies of ``make_env()`` spread over worker processes, driven over pipes.

    Env ``i`` lives in worker ``i % num_workers`` (default: one worker per core). Workers start
    with the 'spawn' context because JAX (in the parent) is not fork-safe; ``make_env`` must
    therefore be picklable (a module-level function or a ``functools.partial`` of one), and the
    main script must guard its entry point with ``if __name__ == '__main__'``. Starting costs
    seconds (each worker imports the simulator), so a training run can keep one instance for
    all its evaluations. Use as a context manager: workers are closed (and killed if they do
    not exit) even when evaluation raises.
    """

    def __init__(
        self, make_env: Callable[[], object], num_envs: int, num_workers: int | None = None
    ):
        import multiprocessing

        context = multiprocessing.get_context('spawn')
        self.num_envs = num_envs
        self.num_workers = max(1, min(num_workers or os.cpu_count() or 1, num_envs))
        self.connections, self.processes = [], []
        try:
            for worker in range(self.num_workers):
                parent, child = context.Pipe()
                count = len(range(worker, num_envs, self.num_workers))
                process = context.Process(
                    target=_env_worker, args=(child, make_env, count), daemon=True
                )
                process.start()
                child.close()
                self.connections.append(parent)
                self.processes.append(process)
            for worker in range(self.num_workers):  # Wait for every env to be built (in parallel).
                self._receive(worker)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> EnvWorkers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _receive(self, worker: int):
        try:
            status, payload = self.connections[worker].recv()
        except EOFError:
            raise RuntimeError(f'evaluation env worker {worker} died unexpectedly.') from None
        if status == 'error':
            raise RuntimeError(f'evaluation env worker {worker} failed:\n{payload}')
        return payload

    def _call(self, command: str, items: dict[int, object]) -> dict[int, object]:
        """Send each worker its share of ``{env index: argument}``; collect ``{env index: result}``.

        All messages go out before any reply is read, so the workers run concurrently.
        """
        by_worker: dict[int, list[int]] = {}
        for index in items:
            by_worker.setdefault(index % self.num_workers, []).append(index)
        for worker, indices in by_worker.items():
            payload = [(i // self.num_workers, items[i]) for i in indices]
            self.connections[worker].send((command, payload))
        results = {}
        for worker, indices in by_worker.items():
            results.update(zip(indices, self._receive(worker), strict=True))
        return results

    def reset(self, seeds: dict[int, int]) -> dict[int, np.ndarray]:
        """Reset env ``i`` with ``seeds[i]`` for each key; return the first observations."""
        return self._call('reset', seeds)

    def step(self, actions: dict[int, np.ndarray]) -> dict[int, tuple]:
        """Step env ``i`` with ``actions[i]`` for each key.

        Returns ``{i: (observation, reward, terminated, truncated, success)}``.
        """
        return self._call('step', actions)

    def run_episodes(
        self, policy: Policy, num_episodes: int, base_seed: int, progress: bool = True
    ) -> list[dict[str, float]]:
        """Per-episode statistics of episodes ``0 .. num_episodes-1``, in episode order.

        The envs run in lockstep; each step makes one batched policy call for all live envs
        with their true episode and step ids, and an env that finishes takes the next unplayed
        episode. Episode ``i`` is reset with ``episode_seed(base_seed, i)`` and accumulates its
        return in the same order as ``run_episode``, so the statistics equal sequential
        evaluation's for any policy keyed by (episode, step).
        """
        results: dict[int, dict[str, float]] = {}
        # Per env: [episode id, env step, return so far, last observation]; None when idle.
        slots: list[list | None] = [None] * self.num_envs
        next_episode = 0

        def start(indices: list[int]) -> None:
            nonlocal next_episode
            seeds = {}
            for index in indices:
                if next_episode < num_episodes:
                    seeds[index] = next_episode
                    next_episode += 1
                else:
                    slots[index] = None
            observations = self.reset({i: episode_seed(base_seed, e) for i, e in seeds.items()})
            for index, episode in seeds.items():
                slots[index] = [episode, 0, 0.0, observations[index]]

        with _episode_bar(num_episodes, progress) as bar:
            start(list(range(self.num_envs)))
            while len(results) < num_episodes:
                live = [i for i, slot in enumerate(slots) if slot is not None]
                # Pad to num_envs rows (repeating a live row) so a jitted policy sees one batch
                # shape and does not recompile when envs go idle near the end.
                rows = live + [live[0]] * (self.num_envs - len(live))
                actions = policy(
                    np.stack([slots[i][3] for i in rows]),
                    np.array([slots[i][0] for i in rows]),
                    np.array([slots[i][1] for i in rows]),
                )
                outcomes = self.step({i: actions[row] for row, i in enumerate(live)})
                finished = []
                for index, (
                    observation,
                    reward,
                    terminated,
                    truncated,
                    success,
                ) in outcomes.items():
                    slot = slots[index]
                    slot[1] += 1
                    slot[2] += float(reward)
                    slot[3] = observation
                    if terminated or truncated:
                        results[slot[0]] = {
                            'episode.return': slot[2],
                            'episode.length': slot[1],
                            'success': success,
                        }
                        finished.append(index)
                bar.update(len(finished))
                if finished:
                    start(finished)
        return [results[e] for e in range(num_episodes)]

    def close(self) -> None:
        """Ask every worker to exit; terminate any that has not within a few seconds."""
        for connection in self.connections:
            with contextlib.suppress(BrokenPipeError, OSError):  # That worker may be gone.
                connection.send(('close', None))
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()
        for connection in self.connections:
            connection.close()
        self.connections, self.processes = [], []


@jax.jit
def _policy_actions(agent, base_key, observations, episodes, env_steps):
    """Actions for a batch of observations, each keyed by its (episode, env step)."""
    keys = jax.vmap(lambda e, t: jax.random.fold_in(jax.random.fold_in(base_key, e), t))(
        episodes, env_steps
    )
    # Temperature 0, as FQL's evaluation: the Gaussian agents act with their mean.
    return jax.vmap(lambda o, k: agent.sample_actions(o, seed=k, temperature=0.0))(
        observations, keys
    )


def make_policy(agent, seed: int, step: int) -> Policy:
    """An evaluation policy whose randomness is keyed by (seed, step, episode, env step)."""
    base_key = seeding.eval_actions_key(seed, step)
    return lambda o, e, t: np.asarray(
        _policy_actions(agent, base_key, jnp.asarray(o, jnp.float32), e, t)
    )


def save_videos(run_dir: str, step: int, videos: list[list[np.ndarray]]) -> None:
    """Save rendered episodes as GIFs in ``run_dir/videos``."""
    if not videos:
        return
    import imageio.v2 as imageio

    os.makedirs(os.path.join(run_dir, 'videos'), exist_ok=True)
    for index, frames in enumerate(videos):
        imageio.mimsave(os.path.join(run_dir, 'videos', f'step{step}_episode{index}.gif'), frames)


class Evaluator:
    """Evaluates a run's policies on its own env (or env copies in worker processes).

    Envs and workers are created on first use and kept: starting MuJoCo workers costs seconds.
    Use as a context manager so the workers are closed.
    """

    def __init__(
        self,
        make_env: Callable[[], object],
        num_episodes: int,
        num_envs: int,
        normalize_score: Callable[[float], float] | None,
        video_episodes: int = 0,
        video_frame_skip: int = 3,
        progress: bool = True,
    ):
        self.make_env = make_env
        self.num_episodes = num_episodes
        self.num_envs = num_envs
        self.normalize_score = normalize_score
        self.video_episodes = video_episodes
        self.video_frame_skip = video_frame_skip
        self.progress = progress
        self.env = None
        self.workers: EnvWorkers | None = None
        self.render_ok: bool | None = None

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc) -> None:
        if self.workers is not None:
            self.workers.close()

    def evaluate(self, agent, seed: int, step: int, run_dir: str) -> dict[str, float]:
        """``evaluation/...`` statistics of one seed's policy (and its videos, if asked for)."""
        if self.env is None:
            self.env = self.make_env()
        if self.num_envs > 1 and self.workers is None:
            self.workers = EnvWorkers(self.make_env, self.num_envs)
        policy = make_policy(agent, seed, step)
        if self.workers is None:
            stats = evaluate_sequential(
                self.env, policy, self.num_episodes, seed, self.normalize_score, self.progress
            )
        else:
            episodes = self.workers.run_episodes(policy, self.num_episodes, seed, self.progress)
            stats = summarize(episodes, self.normalize_score)
        if self.video_episodes and self.can_render():
            videos = record_videos(
                self.env, policy, self.video_episodes, seed, self.video_frame_skip
            )
            save_videos(run_dir, step, videos)
        return {f'evaluation/{k}': v for k, v in stats.items()}

    def can_render(self) -> bool:
        """Whether videos can be recorded; checked once, with a warning if not."""
        if self.render_ok is None:
            problem = render_problem(self.make_env)
            self.render_ok = problem is None
            if problem is not None:
                print_warning(
                    f'video rendering does not work here ({problem}); for MuJoCo tasks set '
                    'MUJOCO_GL=egl or MUJOCO_GL=osmesa. Continuing without videos.'
                )
        return self.render_ok
