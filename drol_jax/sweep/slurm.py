"""The SLURM launcher: one job array through submitit, each array task running a pack of jobs.

A task gets ``gpus_per_node`` GPUs and runs ``max(1, gpus_per_node) x jobs_per_gpu`` sweep jobs
side by side, each in its own ``main.py`` process on one of the task's GPUs (or on its CPUs when
it has none), each resumable on its own: its state, log and checkpoints are its own. On the time
limit (or a preemption signalled with SIGUSR2) submitit asks the task to checkpoint: every
running main.py gets SIGTERM, saves a checkpoint and exits, and the task is requeued; the
requeued task skips its finished jobs and resumes the others. A plain ``scontrol requeue`` or a
SIGTERM preemption works the same way, because SLURM signals every main.py directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import signal
import threading
import time
from typing import Any

from drol_jax.errors import UserError
from drol_jax.sweep import gpus
from drol_jax.sweep.jobs import STATE_FILE, JobRunner, job_dir, read_json, slurm_job_id, write_state
from drol_jax.sweep.launchers import forget_state, mark_submitted, restore_state
from drol_jax.sweep.spec import Job

SUBMITIT_LOG_VARIABLE = 'SUBMITIT_LOG_LEVEL'
# How long a task waits for its main.py processes to checkpoint after the requeue signal;
# submitit's signal comes 90 s before the time limit by default.
CHECKPOINT_GRACE_S = 75.0


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """sbatch settings of every array task (``None``: the cluster's default)."""

    partition: str | None = None
    gpus_per_node: int = 1
    jobs_per_gpu: int = 1
    gpu_memory: str = 'share'
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

    @property
    def jobs_per_task(self) -> int:
        """Sweep jobs one array task runs side by side."""
        return max(1, self.gpus_per_node) * self.jobs_per_gpu


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


class PackRunner:
    """One array task: its jobs side by side, one ``JobRunner`` thread each; submitit calls it.

    Each job gets one of the task's GPUs (``CUDA_VISIBLE_DEVICES`` as SLURM set it for the task)
    and its memory share. A job that failed in an earlier run of this same task stays failed
    (``--retry_failed`` runs it again); finished jobs are skipped by their runners.
    """

    def __init__(
        self, jobs: list[Job], sweep_dir: str, repo_root: str, jobs_per_gpu: int, gpu_memory: str
    ):
        self.jobs = list(jobs)
        self.sweep_dir = sweep_dir
        self.repo_root = repo_root
        self.jobs_per_gpu = jobs_per_gpu
        self.gpu_memory = gpu_memory
        self._runners: list[JobRunner] = []
        self._threads: list[threading.Thread] = []
        self._results: dict[str, str] = {}

    def __getstate__(self) -> dict:
        # submitit pickles the pack again when it requeues it: no threads or live runners.
        return {**self.__dict__, '_runners': [], '_threads': [], '_results': {}}

    def _failed_here_before(self, job: Job) -> bool:
        state = read_json(os.path.join(job_dir(self.sweep_dir, job), STATE_FILE)) or {}
        return state.get('state') == 'failed' and state.get('slurm_job_id') == slurm_job_id()

    def __call__(self) -> dict[str, str]:
        """Run the pack's jobs to their ends; return each job's final state by key."""
        visible, how = gpus.visible_gpus()
        per_gpu = max(self.jobs_per_gpu, -(-len(self.jobs) // max(1, len(visible))))
        slots = gpus.make_slots(visible, per_gpu, self.gpu_memory, cpu_jobs=len(self.jobs))
        print(gpus.describe_slots(slots, per_gpu, how), flush=True)
        self._results = {}
        for index, job in enumerate(self.jobs):
            if self._failed_here_before(job):
                self._results[job.key] = 'failed'
                continue
            slot = slots[index % len(slots)]
            runner = JobRunner(
                job, self.sweep_dir, self.repo_root, shield_requeue_signal=True, env=slot.env
            )
            thread = threading.Thread(target=self._run, args=(runner,), daemon=True)
            self._runners.append(runner)
            self._threads.append(thread)
            print(f'{job.key}: {slot.where}', flush=True)
            thread.start()
        # Short joins keep the main thread free for submitit's signal handler.
        for thread in self._threads:
            while thread.is_alive():
                thread.join(timeout=0.5)
        return dict(self._results)

    def _run(self, runner: JobRunner) -> None:
        self._results[runner.job.key] = runner()

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Requeue hook for submitit: every main.py saves a checkpoint, then the pack requeues."""
        import submitit

        for runner in self._runners:
            runner.stop(signal.SIGTERM)
        deadline = time.time() + CHECKPOINT_GRACE_S
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.time()))
        for runner, thread in zip(self._runners, self._threads, strict=True):
            if thread.is_alive():  # Still running past the grace period.
                runner.kill()
                thread.join(timeout=10)
            if self._results.get(runner.job.key) in (None, 'stopped', 'pending'):
                write_state(self.sweep_dir, runner.job, 'stopped', reason='requeued by SLURM')
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _refusal(error: Exception, options: SlurmOptions) -> str:
    """The complaint of sbatch in one line, with what to pass where the cause is known."""
    first = (str(error).strip().splitlines() or ['no message'])[0]
    if 'Invalid generic resource' in str(error):
        return (
            f'sbatch refused --gpus_per_node {options.gpus_per_node}: the partition '
            f'{options.partition or "(default)"} has no GPUs configured for SLURM (GRES). For CPU '
            f'nodes pass --gpus_per_node 0; for GPU nodes pick their --partition. ({first.strip()})'
        )
    return f'sbatch refused the jobs: {first}'


def submit_slurm(
    jobs: list[Job], sweep_dir: str, repo_root: str, name: str, options: SlurmOptions
) -> list[str]:
    """Submit the jobs as one SLURM job array of packs; return each job's SLURM job id.

    Jobs of one pack share their array task's id. Nothing is recorded when sbatch refuses.
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
    size = options.jobs_per_task
    packs = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    previous = {job.key: forget_state(sweep_dir, job) for job in jobs}
    runners = [
        PackRunner(pack, sweep_dir, repo_root, options.jobs_per_gpu, options.gpu_memory)
        for pack in packs
    ]
    try:
        # submitit copies sbatch's complaint to stderr; it is part of the one error line instead.
        with contextlib.redirect_stderr(io.StringIO()), executor.batch():
            submitted = [executor.submit(runner) for runner in runners]
    except (FailedJobError, FailedSubmissionError) as e:
        for job in jobs:
            restore_state(sweep_dir, job, previous[job.key])
        raise UserError(_refusal(e, options)) from e
    ids = []
    for pack, task in zip(packs, submitted, strict=True):
        for job in pack:
            mark_submitted(
                sweep_dir,
                job,
                launcher='slurm',
                slurm_job_id=str(task.job_id),
                pack=[other.key for other in pack],
            )
            ids.append(str(task.job_id))
    return ids
