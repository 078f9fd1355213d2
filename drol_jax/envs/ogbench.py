"""OGBench single-task environments: names, dataset lookup, download, local regeneration.

Names. Full OGBench names pass through (``cube-single-play-singletask-task3-v0``); short names
add the family's default dataset type and the ``singletask`` suffix: ``cube-single`` ->
``cube-single-play-singletask-v0``, ``cube-single-task3``, ``cube-single-noisy``,
``antmaze-large`` -> ``antmaze-large-navigate-singletask-v0``, ``antmaze-large-stitch``.

Data, first source that works:
1. ``DataOptions.dataset_path`` (``<file>.npz``; ``<file>-val.npz`` beside it is optional and
   gives validation losses);
2. the OGBench cache ``DataOptions.dataset_dir`` (``<dataset name>.npz`` + ``-val.npz``);
3. OGBench's download into that cache, abandoned after ``download_timeout_s`` without progress
   (nothing partial is left behind); the sha256 of both files is recorded beside them;
4. manipulation families only: local regeneration with the package's scripted oracles
   (``drol_jax.envs.datagen``) into ``DataOptions.generated_dir``, reused by later runs.
Locomotion data came from expert policies the package does not ship, so step 4 is not
available for them and the error explains how to fetch the files elsewhere.

The bundle's provenance ``source`` labels the data wherever it was found: ``'generated'`` when
the file carries the generator's label inside, ``'published'`` only when this code downloaded it
and its sha256 still matches the download record, ``'unverified'`` for anything else. Results on
regenerated or unverified data are thus never mistaken for results on the published datasets.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from typing import Any

import numpy as np

from drol_jax import frames
from drol_jax.envs import visual
from drol_jax.envs.base import (
    DATASET_KEYS,
    DataOptions,
    EnvBundle,
    check_shapes,
    clip_actions,
)
from drol_jax.envs.datagen import manipulation, shards
from drol_jax.errors import DatasetError
from drol_jax.files import write_json_atomic

# Environment -> dataset types OGBench publishes for it; the first is the default for short names.
ENVIRONMENTS: dict[str, tuple[str, ...]] = {
    **{f'cube-{n}': ('play', 'noisy') for n in ('single', 'double', 'triple', 'quadruple')},
    'cube-octuple': ('play', 'noisy'),  # Not on the server: regenerated locally.
    'scene': ('play', 'noisy'),
    **{f'puzzle-{size}': ('play', 'noisy') for size in ('3x3', '4x4', '4x5', '4x6')},
    **{f'pointmaze-{m}': ('navigate', 'stitch') for m in ('medium', 'large', 'giant', 'teleport')},
    **{f'antmaze-{m}': ('navigate', 'stitch', 'explore') for m in ('medium', 'large', 'teleport')},
    'antmaze-giant': ('navigate', 'stitch'),
    **{f'humanoidmaze-{m}': ('navigate', 'stitch') for m in ('medium', 'large', 'giant')},
    **{f'antsoccer-{m}': ('navigate', 'stitch') for m in ('arena', 'medium')},
}
# The visual (64x64 camera image) versions OGBench publishes of the manipulation and maze tasks.
ENVIRONMENTS |= {
    f'{visual.PREFIX}{env}': ENVIRONMENTS[env]
    for env in ENVIRONMENTS
    if env.startswith(('cube-', 'scene', 'puzzle-', 'antmaze-', 'humanoidmaze-'))
    and env != 'cube-octuple'
}
# Families whose data came from scripted oracles in the ogbench package (regenerable).
MANIPULATION_PREFIXES = ('cube-', 'scene', 'puzzle-')

OB_KEYS = ('observations', 'actions', 'terminals', 'qpos', 'qvel')
# The per-row arrays of a visual dataset in OGBench's compact layout, besides its frames.
COMPACT_KEYS = ('valids', 'actions', 'rewards', 'masks', 'terminals')
# Run by a child process so a stalled download can be killed without touching this process.
DOWNLOAD_SCRIPT = 'import sys, ogbench; ogbench.download_datasets([sys.argv[1]], sys.argv[2])'

_TASK = re.compile(r'task[1-5]')


def _say(message: str) -> None:
    print(f'[ogbench] {message}', file=sys.stderr, flush=True)


def resolve_name(env_name: str) -> str | None:
    """Canonical single-task name of a full or short OGBench name, or None (no I/O, no imports)."""
    matches = [env for env in ENVIRONMENTS if env_name == env or env_name.startswith(env + '-')]
    if not matches:
        return None
    env = max(matches, key=len)
    types = ENVIRONMENTS[env]
    rest = env_name[len(env) + 1 :].split('-') if env_name != env else []
    dataset_type = rest.pop(0) if rest and rest[0] in types else types[0]
    if rest[:1] == ['singletask'] and rest[-1:] == ['v0']:
        rest = rest[1:-1]  # The full form; what remains is the optional task.
    if len(rest) > 1 or (rest and not _TASK.fullmatch(rest[0])):
        return None
    task = f'-{rest[0]}' if rest else ''
    return f'{env}-{dataset_type}-singletask{task}-v0'


def dataset_name_of(canonical: str) -> str:
    """``cube-single-play-singletask-task3-v0`` -> ``cube-single-play-v0`` (the file name stem)."""
    parts = [p for p in canonical.split('-') if p != 'singletask' and not _TASK.fullmatch(p)]
    return '-'.join(parts)


def is_regenerable(canonical: str) -> bool:
    """Whether the package's scripted oracles can rebuild this name's dataset."""
    return canonical.startswith(MANIPULATION_PREFIXES)


def make_eval_env(canonical: str) -> Any:
    """The single-task evaluation env (``info['success']`` at episode end)."""
    import ogbench

    return ogbench.make_env_and_datasets(canonical, env_only=True)


def _bytes_in(folder: str, skip: str) -> int:
    total = 0
    for entry in os.scandir(folder):
        with contextlib.suppress(FileNotFoundError):  # The downloader renames finished files.
            total += entry.stat().st_size if entry.path != skip else 0
    return total


class DownloadError(Exception):
    """The OGBench server could not deliver a dataset; the message says why."""


def _sha256(path: str) -> str:
    with open(path, 'rb') as f:
        return hashlib.file_digest(f, 'sha256').hexdigest()


def download_record_path(train_path: str) -> str:
    """The JSON beside a downloaded ``<name>.npz`` holding the sha256 of both files."""
    return train_path[: -len('.npz')] + '.download.json'


def download_published(dataset_name: str, dataset_dir: str, stall_timeout_s: float) -> None:
    """Download both files of ``dataset_name`` into ``dataset_dir`` with OGBench's downloader.

    The download runs in a child process inside a temporary folder; it is killed once no bytes
    arrive for ``stall_timeout_s`` seconds, and only complete files are moved into the cache.
    Their sha256 go to ``download_record_path``, which later runs check to call the data
    published. Raises ``DownloadError``.
    """
    dataset_dir = os.path.expanduser(dataset_dir)
    os.makedirs(dataset_dir, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix='.drol_jax-download-', dir=dataset_dir)
    log_path = os.path.join(tmp_dir, 'download.log')
    proc = None
    try:
        with open(log_path, 'wb') as log:
            cmd = [sys.executable, '-c', DOWNLOAD_SCRIPT, dataset_name, tmp_dir]
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            last_size, last_progress = -1, time.monotonic()
            while proc.poll() is None:
                time.sleep(0.2)
                size = _bytes_in(tmp_dir, skip=log_path)
                if size != last_size:
                    last_size, last_progress = size, time.monotonic()
                elif time.monotonic() - last_progress > stall_timeout_s:
                    raise DownloadError(f'no data received for {stall_timeout_s:g} s')
        if proc.returncode != 0:
            with open(log_path, errors='replace') as log:
                lines = [line.strip() for line in log if line.strip()]
            raise DownloadError(lines[-1] if lines else f'downloader exited with {proc.returncode}')
        digests = {}
        for suffix in ('.npz', '-val.npz'):
            name = f'{dataset_name}{suffix}'
            digests[name] = _sha256(os.path.join(tmp_dir, name))
            os.replace(os.path.join(tmp_dir, name), os.path.join(dataset_dir, name))
        record = {
            'dataset_name': dataset_name,
            'downloaded': datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec='seconds'
            ),
            'sha256': digests,
        }
        write_json_atomic(
            download_record_path(os.path.join(dataset_dir, f'{dataset_name}.npz')), record
        )
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _val_path(train_path: str) -> str:
    return train_path[: -len('.npz')] + '-val.npz'


def _files_of(train_path: str) -> list[str]:
    """The training file and, where it exists, the validation file beside it."""
    val_path = _val_path(train_path)
    return [train_path, val_path] if os.path.isfile(val_path) else [train_path]


def _both_exist(train_path: str) -> bool:
    return os.path.isfile(train_path) and os.path.isfile(_val_path(train_path))


def _required_keys(canonical: str) -> tuple[str, ...]:
    buttons = canonical.removeprefix(visual.PREFIX).startswith(('scene', 'puzzle-'))
    return OB_KEYS + ('button_states',) if buttons else OB_KEYS


def check_npz(path: str, required_keys: tuple[str, ...], read_arrays: bool) -> None:
    """Raise ``DatasetError`` naming ``path`` if it is missing, unreadable or lacks keys.

    With ``read_arrays`` every array is decompressed (catching truncation and CRC errors) and the
    per-step arrays must agree in length.
    """
    if not os.path.isfile(path):
        raise DatasetError(f'Dataset file {path} does not exist.')
    if not zipfile.is_zipfile(path):
        raise DatasetError(f'Dataset file {path} is corrupt or truncated (not an .npz archive).')
    try:
        with np.load(path) as data:
            missing = [k for k in required_keys if k not in data.files]
            if missing:
                raise DatasetError(
                    f'Dataset file {path} lacks the key(s) {", ".join(missing)} '
                    f'(has {", ".join(data.files) or "none"}).'
                )
            if read_arrays:
                lengths = {k: len(data[k]) for k in required_keys}
                if len(set(lengths.values())) > 1:
                    raise DatasetError(
                        f'Dataset file {path} has arrays of unequal length {lengths}.'
                    )
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DatasetError(f'Dataset file {path} is corrupt or truncated ({e}).') from None


def _load_files(canonical: str, train_path: str) -> tuple[Any, Any]:
    """Training and validation data in FQL's format, rewards relabelled for the task.

    Each file is loaded and relabelled as ``ogbench.make_env_and_datasets`` does, which however
    insists on the validation file; here it is optional (None when absent). A visual task's
    files load in OGBench's compact layout (uint8 frames kept as they are, each stored once) and
    become ``FrameDataset`` s.
    """
    import ogbench
    from ogbench.utils import relabel_dataset

    keys = _required_keys(canonical)
    paths = _files_of(train_path)
    for path in paths:
        check_npz(path, keys, read_arrays=False)
    env = make_eval_env(canonical)
    try:
        datasets = []
        for path in paths:
            if visual.is_visual(canonical):
                dataset = ogbench.load_dataset(
                    path, ob_dtype=np.uint8, compact_dataset=True, add_info=True
                )
            else:
                dataset = ogbench.load_dataset(path, compact_dataset=False, add_info=True)
            # Before relabelling, which another task's data can break with an obscure error.
            check_shapes(env, dataset, path, canonical)
            relabel_dataset(env.spec.id, env, dataset)
            if visual.is_visual(canonical):
                arrays = {k: np.asarray(dataset[k], np.float32) for k in COMPACT_KEYS}
                arrays['observations'] = dataset['observations']  # uint8 frames, not copied.
            else:
                arrays = {k: np.asarray(dataset[k], dtype=np.float32) for k in DATASET_KEYS}
            datasets.append(arrays)
    except (
        OSError,
        ValueError,
        EOFError,
        IndexError,
        KeyError,
        zipfile.BadZipFile,
        zlib.error,
    ) as e:
        for path in paths:
            check_npz(path, keys, read_arrays=True)  # Names the bad file if one is to blame.
        raise DatasetError(f'Could not load {train_path} as {canonical} ({e!r}).') from None
    finally:
        env.close()
    clip_actions(datasets, f'[ogbench] {train_path}')
    if visual.is_visual(canonical):
        datasets = [frames.from_compact(d, p) for d, p in zip(datasets, paths, strict=True)]
    return datasets[0], datasets[1] if len(datasets) > 1 else None


def _unverified_reason(train_path: str) -> str | None:
    """Why a file cannot be called published, or None when its download record vouches for it."""
    record_path = download_record_path(train_path)
    if not os.path.isfile(record_path):
        return f'not downloaded by drol_jax (no {os.path.basename(record_path)} beside it)'
    try:
        with open(record_path) as f:
            digests = json.load(f)['sha256']
    except (OSError, ValueError, KeyError, TypeError):
        return f'{record_path} is unreadable'
    for path in _files_of(train_path):
        if digests.get(os.path.basename(path)) != _sha256(path):
            return f'{path} differs from the file drol_jax downloaded'
    return None


def provenance_of(train_path: str, via: str) -> dict[str, Any]:
    """Label the data of an existing file: generated, published or unverified."""
    generation = shards.read_label(train_path)
    if generation is not None:
        return {'source': 'generated', 'path': train_path, 'via': via, 'generation': generation}
    reason = _unverified_reason(train_path)
    if reason is None:
        return {'source': 'published', 'path': train_path, 'via': via}
    return {'source': 'unverified', 'path': train_path, 'via': via, 'why': reason}


def _generated_dir(options: DataOptions, dataset_name: str, episodes: int) -> str:
    tag = (
        f'{manipulation.RECIPE}-ep{episodes}-len{manipulation.EPISODE_LENGTH}'
        f'-seed{options.dataset_seed}'
    )
    return os.path.join(os.path.expanduser(options.generated_dir), dataset_name, tag)


def _regenerate(dataset_name: str, options: DataOptions, why: str) -> tuple[str, str]:
    """Reuse or build the locally generated dataset; returns its training file and ``via``."""
    episodes = options.generate_episodes or manipulation.NUM_EPISODES
    out_dir = _generated_dir(options, dataset_name, episodes)
    train_path = os.path.join(out_dir, f'{dataset_name}.npz')
    if _both_exist(train_path) and shards.read_label(train_path) is not None:
        _say(f'{why}; using the locally regenerated copy in {out_dir}.')
    else:
        val = manipulation.num_val_episodes(episodes)
        _say(
            f'{why}; regenerating {episodes} + {val} episodes locally with the ogbench scripted '
            f'oracles into {out_dir} (NOT the published data).'
        )
        manipulation.generate_dataset(
            dataset_name,
            out_dir,
            num_episodes=episodes,
            seed=options.dataset_seed,
            workers=options.generate_workers,
            episode_length=manipulation.EPISODE_LENGTH,
            show_progress=options.progress,
        )
    return train_path, 'generated_dir'


def _locate(canonical: str, options: DataOptions) -> tuple[str, str]:
    """Find or obtain the dataset files; returns the training file and how it was found."""
    dataset_name = dataset_name_of(canonical)
    if options.dataset_path:
        path = os.path.abspath(os.path.expanduser(options.dataset_path))
        if not path.endswith('.npz'):
            raise DatasetError(f'--dataset_path must name an .npz file, got {path}.')
        if not os.path.isfile(path):
            raise DatasetError(
                f'--dataset_path: no file {path} (looked for the training .npz there; a '
                f'{os.path.basename(_val_path(path))} beside it is optional).'
            )
        if os.path.isfile(_val_path(path)):
            _say(f'using {path} (given by dataset_path) and {_val_path(path)}.')
        else:
            _say(
                f'using {path} (given by dataset_path); no {_val_path(path)}, no validation losses.'
            )
        return path, 'dataset_path'

    cache_dir = os.path.abspath(os.path.expanduser(options.dataset_dir))
    if os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
        raise DatasetError(f'--dataset_dir {cache_dir} is a file, not a folder.')
    cached = os.path.join(cache_dir, f'{dataset_name}.npz')
    if _both_exist(cached):
        _say(f'using {cached} from the OGBench cache.')
        return cached, 'dataset_dir'

    why = f'{dataset_name} is not in the OGBench cache {cache_dir}'
    if options.download:
        _say(f'{why}; downloading it (giving up after {options.download_timeout_s:g} s stalled).')
        try:
            download_published(dataset_name, cache_dir, options.download_timeout_s)
            _say(f'downloaded {cached}.')
            return cached, 'download'
        except (DownloadError, OSError) as e:
            why += f', and the download failed ({e})'
    else:
        why += ', and downloads are disabled'

    if visual.is_visual(canonical):
        raise DatasetError(visual.missing_data_message(dataset_name, cache_dir, why))
    if is_regenerable(canonical):
        return _regenerate(dataset_name, options, why)
    command = (
        'python -c "from drol_jax.envs.ogbench import download_published; '
        f"download_published('{dataset_name}', '~/.ogbench/data', 60)\""
    )
    raise DatasetError(
        f'{why}. Locomotion datasets came from expert policies that ogbench does not ship, so '
        f'they cannot be regenerated: on a machine with internet run {command}, then copy '
        f'{dataset_name}.npz, {dataset_name}-val.npz and {dataset_name}.download.json into '
        f'{cache_dir} (or point --dataset_path at the first).'
    )


class OGBenchFamily:
    """Registry entry for the OGBench single-task environments."""

    name = 'ogbench'

    def resolve(self, env_name: str) -> str | None:
        """Canonical single-task name, or None if ``env_name`` is not an OGBench name."""
        return resolve_name(env_name)

    def known_names(self) -> list[str]:
        """Short names: each environment and its non-default dataset types."""
        names = []
        for env, types in ENVIRONMENTS.items():
            names += [env] + [f'{env}-{t}' for t in types[1:]]
        return names

    def task_family(self, canonical_name: str) -> str:
        """The dataset name without version (``cube-single-play`` for every cube-single task)."""
        return dataset_name_of(canonical_name).removesuffix('-v0')

    def load(self, env_name: str, options: DataOptions) -> EnvBundle:
        """Find, download or regenerate the data of ``env_name`` and load it for training.

        A visual task first chooses and tries its renderer, and checks that the frames fit on
        the device before reading them.
        """
        if visual.is_visual(env_name):
            visual.choose_render_backend()
        path, via = _locate(env_name, options)
        if visual.is_visual(env_name):
            visual.check_rendering(functools.partial(make_eval_env, env_name), env_name)
            needed = frames.stored_dataset_bytes(path)
            frames.check_fits(needed, what=f'{os.path.basename(path)} (frames stored once)')
        train, val = _load_files(env_name, path)
        provenance = provenance_of(path, via)
        provenance.update(env_name=env_name, dataset_name=dataset_name_of(env_name))
        return EnvBundle(
            env_name=env_name,
            make_env=functools.partial(make_eval_env, env_name),
            train_dataset=train,
            val_dataset=val,
            provenance=provenance,
        )


FAMILY = OGBenchFamily()
