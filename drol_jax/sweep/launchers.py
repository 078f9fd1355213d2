"""Launching a sweep's jobs: here (``local``) or on a SLURM cluster through submitit.

Launching is idempotent: a job whose runs are complete is skipped, a queued or running one is
left alone, a stopped one resumes from its checkpoint, and a failed one runs again only with
``retry_failed``. Each launched job's old ``state.json`` is removed first, so the state files
always describe the latest attempt.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from drol_jax.errors import UserError
from drol_jax.files import write_json_atomic
from drol_jax.sweep.jobs import STATE_FILE, SUBMITTED_FILE, JobRunner, job_dir
from drol_jax.sweep.spec import Job
from drol_jax.sweep.status import JobStatus

SUBMITIT_LOG_VARIABLE = 'SUBMITIT_LOG_LEVEL'


@dataclasses.dataclass(frozen=True)
class LaunchPlan:
    """Which jobs to launch and why the others are left out."""

    launch: list[Job]
    done: list[Job]
    active: list[Job]
    failed: list[Job]

    def summary(self) -> str:
        """One line: how many jobs launch, and the skipped ones by reason."""
        parts = [f'{len(self.launch)} to launch']
        if self.done:
            parts.append(f'{len(self.done)} done (skipped)')
        if self.active:
            parts.append(f'{len(self.active)} queued or running (left alone)')
        if self.failed:
            parts.append(f'{len(self.failed)} failed (skipped; --retry_failed runs them again)')
        return ', '.join(parts)


def plan_launch(statuses: list[JobStatus], retry_failed: bool) -> LaunchPlan:
    """Sort jobs by what a launch does with them."""
    plan = LaunchPlan([], [], [], [])
    for status in statuses:
        if status.state == 'done':
            plan.done.append(status.job)
        elif status.active:
            plan.active.append(status.job)
        elif status.state == 'failed' and not retry_failed:
            plan.failed.append(status.job)
        else:
            plan.launch.append(status.job)
    return plan


def _mark_submitted(sweep_dir: str, job: Job, **record: Any) -> None:
    folder = job_dir(sweep_dir, job)
    os.makedirs(folder, exist_ok=True)
    write_json_atomic(os.path.join(folder, SUBMITTED_FILE), {'time': time.time(), **record})


def _forget_state(sweep_dir: str, job: Job) -> None:
    path = os.path.join(job_dir(sweep_dir, job), STATE_FILE)
    if os.path.exists(path):
        os.remove(path)


def run_local(jobs: list[Job], sweep_dir: str, repo_root: str, parallel: int) -> dict[str, str]:
    """Run jobs here, ``parallel`` at a time; return each job's final state by key.

    Ctrl-C reaches every running main.py (same process group), which checkpoints and stops;
    jobs not started yet are dropped, and launching the sweep again resumes everything.
    """
    for job in jobs:
        _forget_state(sweep_dir, job)
        _mark_submitted(
            sweep_dir, job, launcher='local', host=socket.gethostname(), pid=os.getpid()
        )
    printing = threading.Lock()

    def say(message: str) -> None:
        with printing:
            print(message, flush=True)

    def run(index: int, job: Job) -> str:
        say(f'[{index}/{len(jobs)}] start    {job.key}')
        runner = JobRunner(job, sweep_dir, repo_root, shield_requeue_signal=False)
        return runner()

    results: dict[str, str] = {}
    pool = ThreadPoolExecutor(max_workers=parallel)
    futures = {pool.submit(run, i, job): job for i, job in enumerate(jobs, 1)}
    try:
        for future in as_completed(futures):
            job = futures[future]
            results[job.key] = state = future.result()
            say(f'{state:<8} {job.key}')
    except KeyboardInterrupt:
        say('interrupted: running jobs checkpoint and stop; launch the sweep again to resume.')
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return results


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """sbatch settings of every job (``None``: the cluster's default)."""

    partition: str | None = None
    gpus_per_node: int = 1
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time_min: int = 1440
    array_parallelism: int = 256
    account: str | None = None
    qos: str | None = None
    sbatch: dict[str, Any] = dataclasses.field(default_factory=dict)
    setup: tuple[str, ...] = ()
    max_timeouts: int = 10
    python: str | None = None


def parse_sbatch_lines(lines: list[str]) -> dict[str, Any]:
    """``['--constraint=a100', 'exclusive']`` -> ``{'constraint': 'a100', 'exclusive': True}``."""
    parsed: dict[str, Any] = {}
    for line in lines:
        text = line.strip().removeprefix('#SBATCH').strip().lstrip('-')
        key, has_value, value = text.partition('=')
        if not key or ' ' in key:
            raise UserError(f'--sbatch expects KEY=VALUE or KEY (an sbatch option), got {line!r}.')
        parsed[key.replace('-', '_')] = value if has_value else True
    return parsed


def import_submitit():
    """Import submitit without its logging set-up, or raise ``UserError`` when it is missing.

    On import submitit applies a ``logging.config.dictConfig``, which closes every handler the
    process already has (absl's among them). The variable is restored afterwards, so the jobs,
    which inherit this environment, still log through submitit's handlers.
    """
    previous = os.environ.get(SUBMITIT_LOG_VARIABLE)
    os.environ[SUBMITIT_LOG_VARIABLE] = 'NOCONFIG'
    try:
        import submitit
    except ImportError as e:
        raise UserError('--launcher slurm needs submitit: pip install -e ".[slurm]"') from e
    finally:
        if previous is None:
            del os.environ[SUBMITIT_LOG_VARIABLE]
        else:
            os.environ[SUBMITIT_LOG_VARIABLE] = previous
    return submitit


def submit_slurm(
    jobs: list[Job], sweep_dir: str, repo_root: str, name: str, options: SlurmOptions
) -> list[str]:
    """Submit the jobs as one SLURM job array through submitit; return their SLURM job ids.

    Each array task runs one ``JobRunner``. On the time limit (or a preemption signalled with
    SIGUSR2) submitit asks the runner to checkpoint and requeues the task, which then continues
    with ``--resume``; a plain ``scontrol requeue`` or a SIGTERM preemption works the same way
    because main.py checkpoints on SIGTERM and the restarted task finds the checkpoint.
    """
    submitit = import_submitit()
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    if shutil.which('sbatch') is None:
        raise UserError('--launcher slurm: sbatch is not on PATH; run this on a SLURM login node.')
    executor = submitit.SlurmExecutor(
        folder=os.path.join(sweep_dir, 'slurm'),
        max_num_timeout=options.max_timeouts,
        python=options.python,
    )
    parameters = dict(
        job_name=name,
        time=options.time_min,
        partition=options.partition,
        gpus_per_node=options.gpus_per_node or None,
        cpus_per_task=options.cpus_per_task,
        mem=None if options.mem_gb is None else f'{int(options.mem_gb * 1024)}MB',
        account=options.account,
        qos=options.qos,
        array_parallelism=options.array_parallelism,
        setup=list(options.setup) or None,
        stderr_to_stdout=True,
        # Requeue after preemption or node failure instead of ending the job.
        additional_parameters={'requeue': True, **options.sbatch},
    )
    executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    for job in jobs:
        _forget_state(sweep_dir, job)
    runners = [JobRunner(job, sweep_dir, repo_root, shield_requeue_signal=True) for job in jobs]
    try:
        with executor.batch():
            submitted = [executor.submit(runner) for runner in runners]
    except (FailedJobError, FailedSubmissionError) as e:
        first = (str(e).strip().splitlines() or ['no message'])[0]
        raise UserError(f'sbatch refused the jobs: {first}') from e
    ids = [str(s.job_id) for s in submitted]
    for job, job_id in zip(jobs, ids, strict=True):
        _mark_submitted(sweep_dir, job, launcher='slurm', slurm_job_id=job_id)
    return ids
