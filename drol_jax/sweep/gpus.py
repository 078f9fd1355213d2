"""GPU placement of sweep jobs: which GPUs a machine has, and the environment each job gets.

Every job is one process that trains its seeds together. On a GPU machine each job sees exactly
one GPU (``CUDA_VISIBLE_DEVICES``), and ``jobs_per_gpu`` jobs share a GPU. JAX preallocates 75% of
a GPU's memory in every process by default, so with several jobs per GPU each one is given a
share of it (``XLA_PYTHON_CLIENT_MEM_FRACTION``, ``share`` mode), or allocates only what it uses
(``XLA_PYTHON_CLIENT_PREALLOCATE=false``, ``grow`` mode). Memory settings the user exported
beforehand are kept. Nothing here imports JAX: a launcher that initialised CUDA would hold
memory on every GPU for as long as the sweep runs.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from drol_jax.errors import UserError

MEMORY_MODES = ('share', 'grow')
# Part of a shared GPU left outside the jobs' preallocated pools: each process's CUDA context
# and libraries (a few hundred MB each) live outside XLA's pool.
MEMORY_HEADROOM = 0.1
MEMORY_VARIABLES = (
    'XLA_PYTHON_CLIENT_MEM_FRACTION',
    'XLA_PYTHON_CLIENT_PREALLOCATE',
    'XLA_PYTHON_CLIENT_ALLOCATOR',
)


@dataclasses.dataclass(frozen=True)
class Gpu:
    """One GPU as ``CUDA_VISIBLE_DEVICES`` names it (an index, a UUID or a MIG id)."""

    device: str
    name: str = ''
    memory_mb: int | None = None
    uuid: str = ''

    def describe(self) -> str:
        """``0 (NVIDIA H200, 143771 MB)`` or just the id when nvidia-smi did not say more."""
        details = ', '.join(
            part for part in (self.name, f'{self.memory_mb} MB' if self.memory_mb else '') if part
        )
        return f'{self.device} ({details})' if details else self.device


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where one job runs: a GPU (None: the CPU) and the environment variables it gets."""

    gpu: Gpu | None
    env: dict[str, str]

    @property
    def where(self) -> str:
        """``GPU 3`` or ``CPU``."""
        return 'CPU' if self.gpu is None else f'GPU {self.gpu.device}'


def query_nvidia_smi() -> list[Gpu] | None:
    """Every GPU the driver lists (index, name, memory); None without a working nvidia-smi."""
    if shutil.which('nvidia-smi') is None:
        return None
    try:
        result = subprocess.run(
            [
                'nvidia-smi',
                '--query-gpu=index,uuid,name,memory.total',
                '--format=csv,noheader,nounits',
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    gpus = []
    for line in result.stdout.splitlines():
        fields = [field.strip() for field in line.split(',')]
        if len(fields) == 4 and fields[0].isdigit():
            memory = int(fields[3]) if fields[3].isdigit() else None
            gpus.append(Gpu(fields[0], fields[2], memory, fields[1]))
    return gpus


def visible_gpus(
    environ: Mapping[str, str] | None = None, listed: list[Gpu] | None = None
) -> tuple[list[Gpu], str]:
    """The GPUs a process started here may use, and how that was found out (or why none).

    ``CUDA_VISIBLE_DEVICES``, when set, decides (SLURM sets it to a job's GPUs); otherwise every
    GPU nvidia-smi lists. ``listed`` stands in for nvidia-smi's answer (tests).
    """
    environ = os.environ if environ is None else environ
    listed = query_nvidia_smi() if listed is None else listed
    by_id = {key: gpu for gpu in listed or [] for key in (gpu.device, gpu.uuid) if key}
    if 'CUDA_VISIBLE_DEVICES' in environ:
        value = environ['CUDA_VISIBLE_DEVICES'].strip()
        entries = [entry.strip() for entry in value.split(',') if entry.strip()]
        if not entries or entries[0] in ('-1', 'NoDevFiles'):
            return [], f'CUDA_VISIBLE_DEVICES={value!r} hides every GPU'
        # Named as the variable names them: a job's CUDA_VISIBLE_DEVICES takes one entry.
        gpus = [
            dataclasses.replace(by_id.get(entry, Gpu(entry)), device=entry) for entry in entries
        ]
        return gpus, f'CUDA_VISIBLE_DEVICES={value}'
    if listed is None:
        return [], 'nvidia-smi is not available (no NVIDIA driver here)'
    if not listed:
        return [], 'nvidia-smi lists no GPU'
    return listed, 'nvidia-smi'


def parse_gpus(value: str | None) -> int | list[str] | None:
    """``--gpus``: None (all visible), a count (``4``: the first four) or ids (``0,2,5``, ``3,``).

    A single id is written with a comma (``3,``): a plain number is a count.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        if int(text) < 1:
            raise UserError(
                f'--gpus takes a count >= 1 or GPU ids, got {value!r} (GPU 0 alone: --gpus 0,).'
            )
        return int(text)
    ids = [entry.strip() for entry in text.rstrip(',').split(',')]
    if not all(ids) or len(set(ids)) != len(ids):
        raise UserError(f'--gpus takes a count or distinct ids such as 0,1,3, got {value!r}.')
    return ids


def choose_gpus(requested: int | list[str] | None, visible: list[Gpu], how: str) -> list[Gpu]:
    """The GPUs ``--gpus`` picks from the visible ones; ``UserError`` for ones that are not here."""
    if requested is None:
        return visible
    if not visible:
        raise UserError(
            f'--gpus: no GPU is visible here ({how}); leave --gpus out to run the jobs on the '
            'CPU, or use it with --dry_run to plan a GPU node.'
        )
    if isinstance(requested, int):
        if requested > len(visible):
            raise UserError(
                f'--gpus {requested}: only {len(visible)} GPU(s) visible here '
                f'({", ".join(g.device for g in visible)}; {how}).'
            )
        return visible[:requested]
    by_id = {gpu.device: gpu for gpu in visible}
    missing = [entry for entry in requested if entry not in by_id]
    if missing:
        raise UserError(
            f'--gpus: GPU {", ".join(missing)} not visible here (visible: '
            f'{", ".join(g.device for g in visible)}; {how}).'
        )
    return [by_id[entry] for entry in requested]


def memory_env(
    jobs_per_gpu: int, mode: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The XLA client memory settings of a job that shares its GPU with ``jobs_per_gpu - 1``.

    One job per GPU keeps JAX's default (75% preallocated). Settings the user exported are left
    alone (the job inherits them).
    """
    environ = os.environ if environ is None else environ
    if jobs_per_gpu == 1 or any(name in environ for name in MEMORY_VARIABLES):
        return {}
    if mode == 'grow':
        return {'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}
    return {'XLA_PYTHON_CLIENT_MEM_FRACTION': f'{(1 - MEMORY_HEADROOM) / jobs_per_gpu:.3f}'}


def make_slots(
    gpus: Sequence[Gpu], jobs_per_gpu: int, memory_mode: str, cpu_jobs: int
) -> list[Slot]:
    """One slot per job that runs at once: ``jobs_per_gpu`` per GPU, or ``cpu_jobs`` CPU slots.

    GPUs are interleaved (0, 1, ..., 0, 1, ...), so the first jobs spread over every GPU before
    any GPU gets a second job.
    """
    if not gpus:
        return [Slot(None, {}) for _ in range(cpu_jobs)]
    memory = memory_env(jobs_per_gpu, memory_mode)
    return [
        Slot(gpu, {'CUDA_VISIBLE_DEVICES': gpu.device, **memory})
        for _ in range(jobs_per_gpu)
        for gpu in gpus
    ]


def describe_slots(slots: Sequence[Slot], jobs_per_gpu: int, how: str) -> str:
    """The placement plan in one or two lines, as the launcher prints it."""
    gpus = list(dict.fromkeys(slot.gpu for slot in slots if slot.gpu is not None))
    if not gpus:
        return f'placement: {len(slots)} job(s) at a time on the CPU (no GPU: {how})'
    memory = {k: v for k, v in slots[0].env.items() if k != 'CUDA_VISIBLE_DEVICES'}
    if memory:
        share = ', '.join(f'{k}={v}' for k, v in memory.items())
    elif jobs_per_gpu == 1:
        share = "JAX's default preallocation (75% of the GPU)"
    else:
        kept = ', '.join(f'{n}={os.environ[n]}' for n in MEMORY_VARIABLES if n in os.environ)
        share = f'your own {kept}'
    return (
        f'placement: {len(gpus)} GPU(s) [{"; ".join(g.describe() for g in gpus)}] ({how}), '
        f'{jobs_per_gpu} job(s) per GPU: {len(slots)} job(s) at a time, each seeing one GPU '
        f'through CUDA_VISIBLE_DEVICES, memory: {share}; jobs take GPUs as they free up'
    )
