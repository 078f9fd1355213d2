"""Sharded, resumable generation of episode datasets, for any recipe.

A recipe hands ``collect_shards`` a function that builds its collector: an object whose
``collect(seed_seq)`` returns one episode's arrays and how many attempts it discarded (redraws)
before keeping it. Every episode draws its randomness from its own child of
``numpy.random.SeedSequence(seed)``, so an episode depends on the seed and its index only, not on
how episodes are spread over worker processes or over interrupted runs.

Finished episodes go to ``<dataset_name>.partial/`` beside the destination as they come (one
shard per episode, with the recipe's settings in ``settings.json``); SIGINT or SIGTERM keeps
them (``GenerationInterrupted``), and the same call continues from there. ``assemble_dataset``
then concatenates the shards into the final files, byte-identical to an uninterrupted
generation, with the recipe's provenance label inside (key ``LABEL_KEY``).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import threading
import zipfile
import zlib
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from drol_jax.errors import DatasetError, Interrupted
from drol_jax.files import write_atomic, write_json_atomic

# The npz key holding the provenance JSON of generated data (ogbench's loader ignores it).
LABEL_KEY = 'drol_jax_provenance'
# Zip member timestamps are fixed so equal arrays always give byte-identical files.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
_SHARD = re.compile(r'episode-(\d+)\.npz')


class EpisodeCollector(Protocol):
    """What a recipe collects with: one episode from its seed, in the recipe's process."""

    def collect(self, seed_seq: np.random.SeedSequence) -> tuple[dict[str, np.ndarray], int]:
        """One episode's arrays and the number of discarded attempts before it."""


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


_WORKER: EpisodeCollector | None = None
_WORKER_ERROR: Exception | None = None


def _init_worker(make_collector: Callable[[], EpisodeCollector]) -> None:
    """Build this worker's collector; a failure is raised by the worker's first job.

    A pool replaces a worker whose initializer raises, forever, so the caller would wait on a
    pool that never works; raised from a job instead, the error reaches the caller.
    """
    global _WORKER, _WORKER_ERROR
    try:
        _WORKER = make_collector()
    except Exception as e:  # noqa: BLE001 - re-raised in the caller by the first job.
        _WORKER_ERROR = e


def _collect_in_worker(job: tuple[int, np.random.SeedSequence]):
    if _WORKER_ERROR is not None:
        raise _WORKER_ERROR
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


def partial_dir(out_dir: str, dataset_name: str) -> str:
    """Folder where ``collect_shards`` keeps finished episodes until ``assemble_dataset`` runs."""
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
    make_collector: Callable[[], EpisodeCollector],
    folder: str,
    jobs: list[tuple[int, np.random.SeedSequence]],
    workers: int,
    progress: tqdm,
) -> None:
    """Collect the episodes of ``jobs`` and write each to its shard as soon as it is done."""
    if workers == 1:
        collector = make_collector()
        for index, seed_seq in jobs:
            _write_shard(folder, index, *collector.collect(seed_seq))
            progress.update()
        return
    # 'spawn': the caller may already run JAX threads, which a fork would copy mid-state.
    ctx = multiprocessing.get_context('spawn')
    # Workers start with SIGINT ignored (an ignored signal stays ignored across exec), so Ctrl-C
    # in a terminal stops only this process, which then terminates them quietly with SIGTERM.
    with _signal_handlers(signal.SIG_IGN, (signal.SIGINT,)):
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(make_collector,))
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


def collect_shards(
    dataset_name: str,
    out_dir: str,
    settings: dict[str, Any],
    make_collector: Callable[[], EpisodeCollector],
    seed: int,
    total: int,
    workers: int | None,
    show_progress: bool,
) -> str:
    """Collect episodes ``0 .. total - 1`` into their shards; return the shard folder.

    Shards already in ``partial_dir(out_dir, dataset_name)`` are kept, so a call interrupted by
    SIGINT or SIGTERM (``GenerationInterrupted``) or killed continues where it stopped when
    repeated with the same arguments; ``settings`` must equal those the folder was started with
    (``DatasetError`` otherwise), and checking them is also the check that ``out_dir`` is
    writable, before the first episode is spent.

    Args:
        dataset_name: names the shard folder and the progress bar.
        out_dir: the destination folder (created).
        settings: the recipe's settings (JSON), recorded in the shard folder.
        make_collector: builds the recipe's collector; picklable, as worker processes call it.
        seed: root of the per-episode seeds.
        total: number of episodes.
        workers: worker processes (None: every core; 1: in this process).
        show_progress: show a tqdm bar with ETA on stderr.
    """
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
                _collect(make_collector, folder, jobs, workers, progress)
    except _Stop as stop:
        kept = len(_finished_shards(folder, total))
        raise GenerationInterrupted(
            f'{signal.Signals(stop.signum).name} stopped the generation of {dataset_name}: '
            f'{kept} of {total} episodes are kept in {folder}; run the same command again to '
            'continue.',
            stop.signum,
        ) from None
    return folder


def count_redraws(folder: str, total: int) -> int:
    """Attempts the collectors discarded over the ``total`` episodes of a shard folder."""
    return sum(_redraws(folder, i) for i in range(total))


def assemble_dataset(folder: str, files: dict[str, range], label: dict[str, Any]) -> None:
    """Write each file of ``files`` from the shards of its episode range, then remove ``folder``.

    ``label`` goes inside every file under ``LABEL_KEY``.
    """
    for path, indices in files.items():
        _assemble(folder, indices, label, path)
    shutil.rmtree(folder)
