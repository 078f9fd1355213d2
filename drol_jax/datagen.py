"""Regenerate OGBench manipulation datasets locally with the package's scripted oracles.

The OGBench cube, scene and puzzle datasets were collected by scripted oracles that ship with the
``ogbench`` package, so they can be rebuilt when the dataset server is out of reach. This module
follows the published recipe (OGBench paper, appendix on datasets): env ``<family>-v0`` in
``data_collection`` mode without termination at the goal, plan oracles with smoothed noise for
``play`` and noisy Markov oracles for ``noisy``, a new random target whenever the oracle finishes,
``1000`` training plus ``100`` validation episodes of ``1001`` steps, stored in OGBench's file
format so ``ogbench.make_env_and_datasets`` loads them unchanged.

Every episode draws its randomness from its own child of ``numpy.random.SeedSequence(seed)``, so
an episode depends on the seed and its index only, not on how episodes are spread over worker
processes or over interrupted runs. Finished episodes go to ``<dataset_name>.partial/`` beside
the destination as they come; SIGINT or SIGTERM keeps them, and the same command continues from
there. The final files are byte-identical to an uninterrupted generation and carry their
provenance inside (key ``LABEL_KEY``), so a copy anywhere is still recognised as generated.

Command line::

    python -m drol_jax.datagen --dataset_name=cube-single-play-v0 --num_episodes=1000
        --dataset_dir=DIR [--seed=0] [--workers=N] [--episode_length=1001] [--progress=false]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import sys
import threading
import zipfile
import zlib
from typing import Any

import numpy as np
from tqdm import tqdm

import drol_jax.envs  # noqa: F401  (quiets the simulators' import warnings in every worker)
from drol_jax.cli import ArgumentParser, reports_user_errors
from drol_jax.errors import DatasetError, Interrupted, UserError
from drol_jax.files import write_atomic, write_json_atomic

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

# The npz key holding the provenance JSON of generated data (ogbench's loader ignores it).
LABEL_KEY = 'drol_jax_provenance'
# Zip member timestamps are fixed so equal arrays always give byte-identical files.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
_SHARD = re.compile(r'episode-(\d+)\.npz')


def parse_dataset_name(dataset_name: str) -> tuple[str, str]:
    """Split ``cube-single-play-v0`` into env family ``cube-single`` and dataset type ``play``.

    Raises ``DatasetError`` for names this module cannot regenerate.
    """
    parts = dataset_name.split('-')
    family, dataset_type = '-'.join(parts[:-2]), parts[-2] if len(parts) >= 3 else ''
    manipulation = family.startswith(('cube-', 'puzzle-')) or family == 'scene'
    if parts[-1] != 'v0' or dataset_type not in DATASET_TYPES or not manipulation:
        raise DatasetError(
            f'Cannot regenerate {dataset_name!r}: only OGBench manipulation datasets '
            f'(cube-*, scene, puzzle-*) of type {" or ".join(DATASET_TYPES)} have scripted '
            'oracles, named like cube-single-play-v0.'
        )
    return family, dataset_type


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
            f'{self.family}-v0',
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


def _stack_records(records: dict[str, list]) -> dict[str, np.ndarray]:
    """Lists of per-step values to arrays in OGBench's dtypes."""
    out = {k: np.asarray(v, np.float32) for k, v in records.items() if k != 'button_states'}
    out['terminals'] = np.asarray(records['terminals'], bool)
    if records['button_states']:
        out['button_states'] = np.asarray(records['button_states'], np.int64)
    return out


class GenerationInterrupted(Interrupted, DatasetError):
    """SIGINT or SIGTERM stopped a generation; the finished episodes stay on disk."""


class _Stop(BaseException):
    """Raised by the signal handler; a BaseException so no ``except Exception`` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_stop(signum, frame):
    raise _Stop(signum)


@contextlib.contextmanager
def _signal_handlers(handler, signums: tuple[int, ...]):
    """Route the signals ``signums`` to ``handler`` inside the block (main thread only).

    Other threads cannot install handlers; there the signals keep their usual meaning.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


_WORKER: _EpisodeCollector | None = None


def _init_worker(dataset_name: str, episode_length: int) -> None:
    global _WORKER
    _WORKER = _EpisodeCollector(dataset_name, episode_length)


def _collect_in_worker(job: tuple[int, np.random.SeedSequence]):
    index, seed_seq = job
    return index, *_WORKER.collect(seed_seq)


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write a compressed npz atomically and deterministically (equal arrays, equal bytes).

    ``np.savez_compressed`` stamps each member with the current time; this writer does not.
    """

    def write(f):
        with zipfile.ZipFile(f, 'w', compression=zipfile.ZIP_DEFLATED) as archive:
            for key, value in arrays.items():
                member = zipfile.ZipInfo(f'{key}.npy', date_time=ZIP_DATE_TIME)
                member.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(member, 'w', force_zip64=True) as out:
                    np.lib.format.write_array(out, np.asanyarray(value), allow_pickle=False)

    write_atomic(path, write)


def read_label(path: str) -> dict[str, Any] | None:
    """The provenance stored inside a generated npz, or None for any other (or unreadable) file."""
    try:
        with np.load(path) as data:
            label = json.loads(data[LABEL_KEY].item()) if LABEL_KEY in data.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
    return label if isinstance(label, dict) else None


def _package_versions() -> dict[str, str]:
    from importlib.metadata import version

    versions = {name: version(name) for name in ('ogbench', 'mujoco', 'gymnasium')}
    versions.update(numpy=np.__version__, python=platform.python_version())
    return versions


def partial_dir(out_dir: str, dataset_name: str) -> str:
    """Folder where ``generate_dataset`` keeps finished episodes until the final files exist."""
    return os.path.join(out_dir, f'{dataset_name}.partial')


def _open_partial(out_dir: str, dataset_name: str, settings: dict[str, Any]) -> str:
    """Create (or reopen) the shard folder; raise ``DatasetError`` if it is unusable.

    Creating the folder and its settings file is also the check that the destination is
    writable, before the first episode is spent.
    """
    folder = partial_dir(out_dir, dataset_name)
    settings_path = os.path.join(folder, 'settings.json')
    try:
        os.makedirs(folder, exist_ok=True)
        if not os.path.isfile(settings_path):
            write_json_atomic(settings_path, settings)
            return folder
        with open(settings_path) as f:
            found = json.load(f)
    except OSError as e:
        raise DatasetError(
            f'Cannot write the generated dataset into {out_dir} ({e.strerror or e}).'
        ) from None
    if found != settings:
        changed = sorted(
            k for k in settings.keys() | found.keys() if found.get(k) != settings.get(k)
        )
        raise DatasetError(
            f'{folder} holds episodes generated with other settings ({", ".join(changed)}); '
            'rerun with the settings it was started with, or delete the folder.'
        )
    return folder


def _finished_shards(folder: str, total: int) -> set[int]:
    indices = {int(m.group(1)) for m in map(_SHARD.fullmatch, os.listdir(folder)) if m}
    return {i for i in indices if i < total}


def _shard_path(folder: str, index: int) -> str:
    return os.path.join(folder, f'episode-{index}.npz')


def _write_shard(folder: str, index: int, episode: dict[str, np.ndarray], redraws: int) -> None:
    write_npz(_shard_path(folder, index), {**episode, 'redraws': np.int64(redraws)})


def _collect(
    dataset_name: str,
    episode_length: int,
    folder: str,
    jobs: list[tuple[int, np.random.SeedSequence]],
    workers: int,
    progress: tqdm,
) -> None:
    """Collect the episodes of ``jobs`` and write each to its shard as soon as it is done."""
    if workers == 1:
        collector = _EpisodeCollector(dataset_name, episode_length)
        for index, seed_seq in jobs:
            _write_shard(folder, index, *collector.collect(seed_seq))
            progress.update()
        return
    # 'spawn': the caller may already run JAX threads, which a fork would copy mid-state.
    ctx = multiprocessing.get_context('spawn')
    # Workers start with SIGINT ignored (an ignored signal stays ignored across exec), so Ctrl-C
    # in a terminal stops only this process, which then terminates them quietly with SIGTERM.
    with _signal_handlers(signal.SIG_IGN, (signal.SIGINT,)):
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(dataset_name, episode_length))
    with pool:
        for index, episode, redraws in pool.imap_unordered(_collect_in_worker, jobs):
            _write_shard(folder, index, episode, redraws)
            progress.update()


def _redraws(folder: str, index: int) -> int:
    with np.load(_shard_path(folder, index)) as shard:
        return int(shard['redraws'])


def _assemble(folder: str, indices: range, label: dict[str, Any], path: str) -> None:
    """Concatenate the shards of ``indices`` into ``path``, with ``label`` inside."""
    parts = []
    for index in indices:
        with np.load(_shard_path(folder, index)) as shard:
            parts.append({k: shard[k] for k in shard.files if k != 'redraws'})
    arrays = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    arrays[LABEL_KEY] = np.array(json.dumps(label, sort_keys=True))
    write_npz(path, arrays)


def generate_dataset(
    dataset_name: str,
    out_dir: str,
    num_episodes: int = NUM_EPISODES,
    seed: int = 0,
    workers: int | None = None,
    episode_length: int = EPISODE_LENGTH,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Generate ``<dataset_name>.npz`` and ``<dataset_name>-val.npz`` in ``out_dir``.

    Finished episodes are kept in ``partial_dir(out_dir, dataset_name)`` until both files are
    written, so a call interrupted by SIGINT or SIGTERM (``GenerationInterrupted``) or killed
    continues where it stopped when repeated with the same arguments.

    Args:
        dataset_name: OGBench dataset name, e.g. ``cube-single-play-v0``.
        out_dir: output folder (created); files are written atomically.
        num_episodes: training episodes; ``num_episodes // 10`` (at least 1) more go to validation.
        seed: root of the per-episode seeds; equal seeds give byte-identical files.
        workers: worker processes (None: every core; 1: in this process).
        episode_length: steps per episode (1001 as published; smaller for quick tests).
        show_progress: show a tqdm bar with ETA on stderr.

    Returns:
        The provenance label, also stored in both files under ``LABEL_KEY``.
    """
    family, dataset_type = parse_dataset_name(dataset_name)
    if num_episodes < 1 or episode_length < 2 or seed < 0:
        raise DatasetError('num_episodes must be >= 1, episode_length >= 2 and seed >= 0.')
    num_val = num_val_episodes(num_episodes)
    total = num_episodes + num_val
    settings = {
        'recipe': RECIPE,
        'dataset_name': dataset_name,
        'seed': seed,
        'episode_length': episode_length,
        'versions': _package_versions(),
    }
    folder = _open_partial(out_dir, dataset_name, settings)
    done = _finished_shards(folder, total)
    seeds = np.random.SeedSequence(seed).spawn(total)
    jobs = [(i, seeds[i]) for i in range(total) if i not in done]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    progress = tqdm(
        total=total,
        initial=len(done),
        desc=f'generating {dataset_name}',
        unit='ep',
        disable=not show_progress,
    )
    try:
        with progress, _signal_handlers(_raise_stop, (signal.SIGINT, signal.SIGTERM)):
            if jobs:
                _collect(dataset_name, episode_length, folder, jobs, workers, progress)
    except _Stop as stop:
        kept = len(_finished_shards(folder, total))
        raise GenerationInterrupted(
            f'{signal.Signals(stop.signum).name} stopped the generation of {dataset_name}: '
            f'{kept} of {total} episodes are kept in {folder}; run the same command again to '
            'continue.',
            stop.signum,
        ) from None

    label = {
        **settings,
        'source': 'generated',
        'env_id': f'{family}-v0',
        'dataset_type': dataset_type,
        'train_episodes': num_episodes,
        'val_episodes': num_val,
        'scene_redraws': sum(_redraws(folder, i) for i in range(total)),
    }
    for suffix, indices in (('', range(num_episodes)), ('-val', range(num_episodes, total))):
        _assemble(folder, indices, label, os.path.join(out_dir, f'{dataset_name}{suffix}.npz'))
    shutil.rmtree(folder)
    return label


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value not in ('true', 'false', '1', '0'):
        raise argparse.ArgumentTypeError(f'expected true or false, got {text!r}')
    return value in ('true', '1')


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = ArgumentParser(prog='python -m drol_jax.datagen', description=__doc__)
    parser.add_argument('--dataset_name', required=True, help='e.g. cube-single-play-v0')
    parser.add_argument('--dataset_dir', required=True, help='output folder')
    parser.add_argument('--num_episodes', type=int, default=NUM_EPISODES, help='training episodes')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--workers', type=int, default=None, help='default: every core')
    parser.add_argument('--episode_length', type=int, default=EPISODE_LENGTH)
    parser.add_argument(
        '--progress', type=_parse_bool, nargs='?', const=True, default=True, help='true or false'
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
        )
    except GenerationInterrupted as e:
        print(e, file=sys.stderr)
        return 128 + e.signum
    print(json.dumps(label, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
