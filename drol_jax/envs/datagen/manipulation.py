"""Regenerate OGBench manipulation datasets locally with the package's scripted oracles.

The OGBench cube, scene and puzzle datasets were collected by scripted oracles that ship with the
``ogbench`` package, so they can be rebuilt when the dataset server is out of reach. This module
follows the published recipe (OGBench paper, appendix on datasets): env ``<family>-v0`` in
``data_collection`` mode without termination at the goal, plan oracles with smoothed noise for
``play`` and noisy Markov oracles for ``noisy``, a new random target whenever the oracle finishes,
``1000`` training plus ``100`` validation episodes of ``1001`` steps, stored in OGBench's file
format so ``ogbench.make_env_and_datasets`` loads them unchanged.

Episodes are collected in sharded, resumable workers (``drol_jax.envs.datagen.shards``): each
depends on the seed and its index only, SIGINT or SIGTERM keeps the finished ones and the same
command continues from there, and the final files are byte-identical to an uninterrupted
generation and carry their provenance inside, so a copy anywhere is still recognised as
generated.

Visual datasets (``visual-cube-single-play-v0``, ...) follow the same recipe with the same
oracles (they act on the env's privileged state, not on its observations) in the visual env
``visual-<family>-v0``, whose observations are the 64x64 camera images that evaluation renders
(same camera, same size), stored as uint8. Rendering dominates their cost, so the measured speed
of a few rendered steps gives an estimate first, and a job estimated at more than a day is
refused unless ``--force`` (on a CPU, Mesa's EGL renders about one frame per second: a
published-size dataset would take weeks; on a GPU node with EGL it is routine).

Command line::

    python -m drol_jax.envs.datagen --dataset_name=cube-single-play-v0 --num_episodes=1000
        --dataset_dir=DIR [--seed=0] [--workers=N] [--episode_length=1001] [--progress=false]
        [--force]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from typing import Any

import numpy as np

from drol_jax.cli import ArgumentParser, reports_user_errors
from drol_jax.envs.datagen import shards
from drol_jax.errors import DatasetError, UserError, did_you_mean

RECIPE = 'ogbench-manipspace-v0'  # Bump when a change to the recipe changes the generated data.
EPISODE_LENGTH = 1001
NUM_EPISODES = 1000
VAL_FRACTION = 10  # One validation episode per ten training episodes, as published.
DATASET_TYPES = ('play', 'noisy')

PLAN_NOISE = 0.1
PLAN_NOISE_SMOOTHING = 0.5
MARKOV_MIN_NORM = 0.4
SCENE_CUBE_MARKOV_MAX_STEP = 100
NOISY_MAX_XI = 0.1
NOISY_ACTION_SCALE = np.array([1.0, 1.0, 1.0, 3.0, 10.0])  # Per action dim: xyz, yaw, gripper.
NOISY_P_RANDOM_ACTION = 0.1
# Range of the per-episode probability of stacking the target cube on another cube.
P_STACK_RANGES = {
    'cube-single': (0.0, 0.0),
    'cube-double': (0.0, 0.25),
    'cube-triple': (0.05, 0.35),
    'cube-quadruple': (0.1, 0.5),
    'cube-octuple': (0.0, 0.35),
}
DEFAULT_P_STACK = 0.5
# Where cube i's position sits in qpos (arm and gripper joints come first).
QPOS_CUBE_START, QPOS_CUBE_SIZE = 14, 7
VISUAL_PREFIX = 'visual-'  # A visual dataset's name: this prefix, then the state dataset's name.
MAX_SECONDS = 24 * 3600  # Longer estimated visual generations are refused without --force.
TIMED_STEPS = 3  # Rendered steps timed (after one untimed step) for the estimate.


def is_visual(dataset_name: str) -> bool:
    """Whether the dataset's observations are rendered images."""
    return dataset_name.startswith(VISUAL_PREFIX)


def env_id(dataset_name: str) -> str:
    """The env that collects a dataset: ``cube-single-v0`` or ``visual-cube-single-v0``."""
    family, _ = parse_dataset_name(dataset_name)
    return f'{VISUAL_PREFIX if is_visual(dataset_name) else ""}{family}-v0'


def parse_dataset_name(dataset_name: str) -> tuple[str, str]:
    """Split ``cube-single-play-v0`` into env family ``cube-single`` and dataset type ``play``.

    A visual name (``visual-cube-single-play-v0``) has the family of its state version. Raises
    ``DatasetError`` for names this module cannot regenerate.
    """
    parts = dataset_name.removeprefix(VISUAL_PREFIX).split('-')
    family, dataset_type = '-'.join(parts[:-2]), parts[-2] if len(parts) >= 3 else ''
    manipulation = family.startswith(('cube-', 'puzzle-')) or family == 'scene'
    if parts[-1] != 'v0' or dataset_type not in DATASET_TYPES or not manipulation:
        raise DatasetError(
            f'Cannot regenerate {dataset_name!r}: only OGBench manipulation datasets '
            f'(cube-*, scene, puzzle-*, and their visual-* versions) of type '
            f'{" or ".join(DATASET_TYPES)} have scripted oracles, named like cube-single-play-v0.'
        )
    return family, dataset_type


def check_registered(dataset_name: str) -> None:
    """Raise ``DatasetError`` unless OGBench registers the env that collects ``dataset_name``.

    ``parse_dataset_name`` accepts any ``cube-*`` or ``puzzle-*`` family by its form; this asks
    the package (so ``cube-singel-play-v0`` fails here, with suggestions, before any worker starts).
    """
    import gymnasium
    import ogbench  # noqa: F401  (registers the OGBench envs with gymnasium)

    if env_id(dataset_name) in gymnasium.registry:
        return
    known = [
        f'{name.removesuffix("-v0")}-{dataset_type}-v0'
        for name in gymnasium.registry
        if name.endswith('-v0') and 'singletask' not in name  # The collecting envs only.
        for dataset_type in DATASET_TYPES
    ]
    known = [k for k in known if _regenerable(k)]
    raise DatasetError(
        f'Cannot regenerate {dataset_name!r}: OGBench has no env {env_id(dataset_name)!r}.'
        f'{did_you_mean(dataset_name, known, n=3)}'
    )


def _regenerable(dataset_name: str) -> bool:
    try:
        parse_dataset_name(dataset_name)
    except DatasetError:
        return False
    return True


def num_val_episodes(num_episodes: int) -> int:
    """Validation episodes that accompany ``num_episodes`` training episodes (at least one)."""
    return max(1, num_episodes // VAL_FRACTION)


def _make_oracles(env: Any, family: str, dataset_type: str) -> dict[str, Any]:
    """The oracles of the recipe, keyed by the value of ``info['privileged/target_task']``."""
    from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
    from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle
    from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

    if dataset_type == 'play':
        kw = dict(env=env, noise=PLAN_NOISE, noise_smoothing=PLAN_NOISE_SMOOTHING)
        if family.startswith('cube-'):
            return {'cube': CubePlanOracle(**kw)}
        if family.startswith('puzzle-'):
            return {'button': ButtonPlanOracle(gripper_always_closed=True, **kw)}
        return {
            'cube': CubePlanOracle(**kw),
            'button': ButtonPlanOracle(**kw),
            'drawer': DrawerPlanOracle(**kw),
            'window': WindowPlanOracle(**kw),
        }
    kw = dict(env=env, min_norm=MARKOV_MIN_NORM)
    if family.startswith('cube-'):
        return {'cube': CubeMarkovOracle(**kw)}
    if family.startswith('puzzle-'):
        return {'button': ButtonMarkovOracle(gripper_always_closed=True, **kw)}
    return {
        'cube': CubeMarkovOracle(max_step=SCENE_CUBE_MARKOV_MAX_STEP, **kw),
        'button': ButtonMarkovOracle(**kw),
        'drawer': DrawerMarkovOracle(**kw),
        'window': WindowMarkovOracle(**kw),
    }


def _scene_is_healthy(qpos: np.ndarray, num_cubes: int) -> bool:
    """False if a cube left the visible table (off the back, or below it outside the drawer)."""
    for i in range(num_cubes):
        start = QPOS_CUBE_START + i * QPOS_CUBE_SIZE
        y, z = qpos[:, start + 1], qpos[:, start + 2]
        outside_drawer = (y <= -0.3) & ((z < 0.06) | (z > 0.08))
        if np.any(y >= 0.29) or np.any(outside_drawer):
            return False
    return True


class _EpisodeCollector:
    """One data-collection env and its oracles; collects episodes from per-episode seeds."""

    def __init__(self, dataset_name: str, episode_length: int):
        import gymnasium
        import ogbench  # noqa: F401  (registers the OGBench envs with gymnasium)

        self.family, self.dataset_type = parse_dataset_name(dataset_name)
        self.env = gymnasium.make(
            env_id(dataset_name),
            terminate_at_goal=False,
            mode='data_collection',
            max_episode_steps=episode_length,
        )
        self.oracles = _make_oracles(self.env, self.family, self.dataset_type)
        self.p_stack_range = P_STACK_RANGES.get(self.family, (DEFAULT_P_STACK, DEFAULT_P_STACK))

    def collect(self, seed_seq: np.random.SeedSequence) -> tuple[dict[str, np.ndarray], int]:
        """One episode from its seed; scene episodes are re-drawn until healthy.

        Returns the episode arrays and the number of discarded (unhealthy) attempts.
        """
        env_seed, oracle_seed = (int(s) for s in seed_seq.generate_state(2))
        rng = np.random.default_rng(seed_seq)
        # The package's oracles draw from numpy's global generator; seed it per episode and put
        # the caller's state back so in-process generation leaves no trace.
        saved_state = np.random.get_state()
        np.random.seed(oracle_seed)
        try:
            redraws = 0
            episode = self._run(rng, env_seed)
            while self.family == 'scene' and not _scene_is_healthy(
                episode['qpos'], self.env.unwrapped._num_cubes
            ):
                redraws += 1
                episode = self._run(rng, None)  # The env's own generator continues.
        finally:
            np.random.set_state(saved_state)
        return episode, redraws

    def _run(self, rng: np.random.Generator, env_seed: int | None) -> dict[str, np.ndarray]:
        noisy = self.dataset_type == 'noisy'
        p_stack = rng.uniform(*self.p_stack_range)
        noise_std = rng.uniform(0, NOISY_MAX_XI) * NOISY_ACTION_SCALE  # The episode's xi.
        ob, info = self.env.reset(seed=env_seed)
        oracle = self.oracles[info['privileged/target_task']]
        oracle.reset(ob, info)
        records: dict[str, list] = {k: [] for k in ('observations', 'actions', 'terminals')}
        records.update(qpos=[], qvel=[], button_states=[])
        done = False
        while not done:
            if noisy and rng.uniform() < NOISY_P_RANDOM_ACTION:
                action = rng.uniform(-1.0, 1.0, size=5)
            else:
                action = np.asarray(oracle.select_action(ob, info), dtype=np.float64)
                if noisy:
                    action = action + noise_std * rng.standard_normal(5)
            action = np.clip(action, -1.0, 1.0)
            next_ob, _, terminated, truncated, info = self.env.step(action)
            done = terminated or truncated
            records['observations'].append(ob)
            records['actions'].append(action)
            records['terminals'].append(done)
            records['qpos'].append(info['prev_qpos'])
            records['qvel'].append(info['prev_qvel'])
            if 'prev_button_states' in info:
                records['button_states'].append(info['prev_button_states'])
            ob = next_ob
            if oracle.done:
                # The new target is part of the oracle's input, so its info replaces the step's.
                ob, info = self.env.unwrapped.set_new_target(p_stack=p_stack)
                oracle = self.oracles[info['privileged/target_task']]
                oracle.reset(ob, info)
        return _stack_records(records)

    def seconds_per_step(self) -> float:
        """Measured seconds of one env step (the rendering of a visual env's frame included)."""
        self.env.reset(seed=0)
        action = np.zeros(self.env.action_space.shape)
        self.env.step(action)  # The first step pays for the renderer's start.
        began = time.perf_counter()
        for _ in range(TIMED_STEPS):
            self.env.step(action)
        return (time.perf_counter() - began) / TIMED_STEPS


def _stack_records(records: dict[str, list]) -> dict[str, np.ndarray]:
    """Lists of per-step values to arrays in OGBench's dtypes (images stay uint8)."""
    out = {k: np.asarray(v, np.float32) for k, v in records.items() if k != 'button_states'}
    if np.asarray(records['observations'][0]).dtype == np.uint8:
        out['observations'] = np.asarray(records['observations'], np.uint8)
    out['terminals'] = np.asarray(records['terminals'], bool)
    if records['button_states']:
        out['button_states'] = np.asarray(records['button_states'], np.int64)
    return out


def _package_versions() -> dict[str, str]:
    from importlib.metadata import version

    versions = {name: version(name) for name in ('ogbench', 'mujoco', 'gymnasium')}
    versions.update(numpy=np.__version__, python=platform.python_version())
    return versions


def check_visual_duration(
    dataset_name: str, total_steps: int, workers: int | None, force: bool
) -> None:
    """Time a few rendered steps; refuse (``DatasetError``) a job estimated above a day.

    The estimate is the measured seconds per step times the steps, spread over the workers
    (every core by default); ``force`` only reports it.
    """
    if 'MUJOCO_GL' not in os.environ:
        os.environ['MUJOCO_GL'] = 'egl'  # Headless rendering; the evaluation's default too.
    try:
        per_step = _EpisodeCollector(dataset_name, EPISODE_LENGTH).seconds_per_step()
    except Exception as e:  # noqa: BLE001 - any renderer failure, reported in one line.
        raise DatasetError(
            f'Cannot render {dataset_name} with MUJOCO_GL={os.environ["MUJOCO_GL"]}: '
            f'{type(e).__name__}: {e}'.splitlines()[0]
        ) from None
    parallel = min(workers or os.cpu_count() or 1, total_steps)
    hours = per_step * total_steps / parallel / 3600
    estimate = (
        f'{total_steps} rendered steps at {per_step:.3f} s per step (measured here) over '
        f'{parallel} workers: about {hours:.2f} hours'
    )
    if hours * 3600 > MAX_SECONDS and not force:
        raise DatasetError(
            f'Refusing to regenerate {dataset_name}: {estimate}, more than a day. Run it on a '
            'GPU node with EGL (rendering is routine there), use fewer --num_episodes, or pass '
            '--force to run it anyway.'
        )
    print(f'[datagen] {dataset_name}: {estimate}.', file=sys.stderr, flush=True)


def generate_dataset(
    dataset_name: str,
    out_dir: str,
    num_episodes: int = NUM_EPISODES,
    seed: int = 0,
    workers: int | None = None,
    episode_length: int = EPISODE_LENGTH,
    show_progress: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Generate ``<dataset_name>.npz`` and ``<dataset_name>-val.npz`` in ``out_dir``.

    Finished episodes are kept in ``shards.partial_dir(out_dir, dataset_name)`` until both files
    are written, so a call interrupted by SIGINT or SIGTERM (``shards.GenerationInterrupted``) or
    killed continues where it stopped when repeated with the same arguments.

    Args:
        dataset_name: OGBench dataset name, e.g. ``cube-single-play-v0``.
        out_dir: output folder (created); files are written atomically.
        num_episodes: training episodes; ``num_episodes // 10`` (at least 1) more go to validation.
        seed: root of the per-episode seeds; equal seeds give byte-identical files.
        workers: worker processes (None: every core; 1: in this process).
        episode_length: steps per episode (1001 as published; smaller for quick tests).
        show_progress: show a tqdm bar with ETA on stderr.
        force: generate a visual dataset even when its estimated duration exceeds a day.

    Returns:
        The provenance label, also stored in both files under ``shards.LABEL_KEY``.
    """
    _, dataset_type = parse_dataset_name(dataset_name)
    check_registered(dataset_name)
    if num_episodes < 1 or episode_length < 2 or seed < 0:
        raise DatasetError('num_episodes must be >= 1, episode_length >= 2 and seed >= 0.')
    num_val = num_val_episodes(num_episodes)
    total = num_episodes + num_val
    if is_visual(dataset_name):
        check_visual_duration(dataset_name, total * episode_length, workers, force)
    settings = {
        'recipe': RECIPE,
        'dataset_name': dataset_name,
        'seed': seed,
        'episode_length': episode_length,
        'versions': _package_versions(),
    }
    folder = shards.collect_shards(
        dataset_name,
        out_dir,
        settings,
        functools.partial(_EpisodeCollector, dataset_name, episode_length),
        seed,
        total,
        workers,
        show_progress,
    )
    label = {
        **settings,
        'source': 'generated',
        'env_id': env_id(dataset_name),
        'dataset_type': dataset_type,
        'train_episodes': num_episodes,
        'val_episodes': num_val,
        'scene_redraws': shards.count_redraws(folder, total),
    }
    files = {
        os.path.join(out_dir, f'{dataset_name}.npz'): range(num_episodes),
        os.path.join(out_dir, f'{dataset_name}-val.npz'): range(num_episodes, total),
    }
    shards.assemble_dataset(folder, files, label)
    return label


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value not in ('true', 'false', '1', '0'):
        raise argparse.ArgumentTypeError(f'expected true or false, got {text!r}')
    return value in ('true', '1')


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = ArgumentParser(prog='python -m drol_jax.envs.datagen', description=__doc__)
    parser.add_argument('--dataset_name', required=True, help='e.g. cube-single-play-v0')
    parser.add_argument('--dataset_dir', required=True, help='output folder')
    parser.add_argument('--num_episodes', type=int, default=NUM_EPISODES, help='training episodes')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--workers', type=int, default=None, help='default: every core')
    parser.add_argument('--episode_length', type=int, default=EPISODE_LENGTH)
    parser.add_argument(
        '--progress', type=_parse_bool, nargs='?', const=True, default=True, help='true or false'
    )
    parser.add_argument(
        '--force',
        action='store_true',
        help='visual datasets: generate even when the measured speed predicts more than a day',
    )
    args = parser.parse_args(argv)
    out_dir = os.path.abspath(os.path.expanduser(args.dataset_dir))
    if out_dir == os.path.abspath(os.path.expanduser('~/.ogbench/data')):
        raise UserError(
            'refusing to write generated data into the OGBench cache ~/.ogbench/data, where it '
            'would sit among the published files; choose another --dataset_dir.'
        )
    try:
        label = generate_dataset(
            args.dataset_name,
            out_dir,
            num_episodes=args.num_episodes,
            seed=args.seed,
            workers=args.workers,
            episode_length=args.episode_length,
            show_progress=args.progress,
            force=args.force,
        )
    except shards.GenerationInterrupted as e:
        print(e, file=sys.stderr)
        return 128 + e.signum
    print(json.dumps(label, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
