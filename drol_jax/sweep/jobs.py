"""Running one job and reading where it stands.

A job's folder (``<sweep dir>/jobs/<job key>/``) holds ``log.txt`` (everything ``main.py``
printed, attempt after attempt), ``submitted.json`` (written by the launcher: which launcher,
SLURM job id) and ``state.json`` (written by the job: running, done, stopped, failed, with the
``error:`` line of a failure). The run folders themselves (``summary.json``, the CSV logs,
checkpoints) are the truth about progress; the state files only say what the job process did.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any

from drol_jax import checkpoints
from drol_jax.files import write_json_atomic
from drol_jax.sweep.spec import Job

STATE_FILE = 'state.json'
SUBMITTED_FILE = 'submitted.json'
LOG_FILE = 'log.txt'
SUCCESS = 'evaluation/success'
# How long a job waits for main.py to checkpoint after forwarding a requeue signal; submitit's
# signal comes 90 s before the time limit by default.
CHECKPOINT_GRACE_S = 75.0


def job_dir(sweep_dir: str, job: Job) -> str:
    """The job's own folder under the sweep folder."""
    return os.path.join(sweep_dir, 'jobs', job.key)


def read_json(path: str) -> dict | None:
    """A JSON file's content, or None when it is missing or half-written."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def slurm_job_id() -> str | None:
    """The SLURM job id of this process (``<array job>_<task>`` for array tasks), if any."""
    array_job, task = os.environ.get('SLURM_ARRAY_JOB_ID'), os.environ.get('SLURM_ARRAY_TASK_ID')
    if array_job and task:
        return f'{array_job}_{task}'
    return os.environ.get('SLURM_JOB_ID')


def _last_row(path: str) -> dict[str, str] | None:
    """The last data row of a CSV log, or None."""
    try:
        with open(path, newline='') as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return None
    return rows[-1] if rows else None


@dataclasses.dataclass(frozen=True)
class Progress:
    """Where a job's runs stand, read from their folders.

    ``step`` is the last logged training step common to all seeds; ``success`` the mean over
    seeds of the last evaluation's success (None before the first evaluation);
    ``checkpoint_step`` the newest checkpoint every seed has; ``started`` whether any seed
    folder holds logs or checkpoints.
    """

    complete: bool
    step: int | None
    success: float | None
    checkpoint_step: int | None
    started: bool


def read_progress(job: Job) -> Progress:
    """Inspect the job's run folders."""
    complete, steps, successes, checkpoint_steps, started = True, [], [], [], False
    for run_dir in job.run_dirs:
        summary = read_json(os.path.join(run_dir, 'summary.json')) or {}
        complete = complete and bool(summary.get('complete'))
        saved = set(checkpoints.saved_steps(run_dir)) if os.path.isdir(run_dir) else set()
        checkpoint_steps.append(saved)
        train = _last_row(os.path.join(run_dir, 'train.csv'))
        evaluation = _last_row(os.path.join(run_dir, 'eval.csv'))
        started = (
            started
            or bool(saved)
            or any(
                os.path.exists(os.path.join(run_dir, name)) for name in ('train.csv', 'eval.csv')
            )
        )
        step = summary.get('step') if summary.get('complete') else None
        if step is None and train and train.get('step'):
            step = int(float(train['step']))
        steps.append(step)
        if evaluation and evaluation.get(SUCCESS):
            successes.append(float(evaluation[SUCCESS]))
    common = set.intersection(*checkpoint_steps) if checkpoint_steps else set()
    known_steps = [s for s in steps if s is not None]
    return Progress(
        complete=complete,
        step=min(known_steps) if len(known_steps) == len(steps) else None,
        success=sum(successes) / len(successes) if successes else None,
        checkpoint_step=max(common) if common else None,
        started=started,
    )


def write_state(sweep_dir: str, job: Job, state: str, **details: Any) -> None:
    """Record what the job process is doing (``running``, ``done``, ``stopped``, ``failed``)."""
    folder = job_dir(sweep_dir, job)
    os.makedirs(folder, exist_ok=True)
    payload = {
        'state': state,
        'time': time.time(),
        'host': socket.gethostname(),
        'pid': os.getpid(),
        'slurm_job_id': slurm_job_id(),
        **details,
    }
    write_json_atomic(os.path.join(folder, STATE_FILE), payload)


def error_line(text: str) -> str | None:
    """The last ``error: ...`` line of a log, else its last non-empty line (a traceback's end)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith('error: ')]
    if errors:
        return errors[-1]
    return lines[-1] if lines else None


def _ignore_requeue_signal() -> None:
    """In main.py's process: ignore SIGUSR2, which SLURM sends to every process of the job.

    The job process (submitit) turns SIGUSR2 into a checkpoint and a requeue and forwards
    SIGTERM to main.py; main.py's default action on SIGUSR2 would kill it without a checkpoint.
    """
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class JobRunner:
    """Runs one job's ``main.py`` command to its end; a callable submitit can checkpoint.

    Each call resumes from the newest checkpoint all seed folders share (``--resume``), or
    starts afresh; files of an attempt that died before its first checkpoint are moved to
    ``jobs/<key>/discarded/<time>/`` first, because main.py never overwrites a run. Returns the
    final state (``done``, ``stopped`` or ``failed``) and records it in ``state.json``.

    Under SLURM, submitit calls ``checkpoint`` on its requeue signal (time limit, preemption):
    main.py gets SIGTERM, saves a checkpoint, and the requeued job continues with ``--resume``.
    """

    def __init__(self, job: Job, sweep_dir: str, repo_root: str, shield_requeue_signal: bool):
        self.job = job
        self.sweep_dir = sweep_dir
        self.repo_root = repo_root
        self.shield_requeue_signal = shield_requeue_signal
        self._process: subprocess.Popen | None = None

    def __getstate__(self) -> dict:
        # submitit pickles the runner again when it requeues it; a live Popen cannot be pickled.
        return {**self.__dict__, '_process': None}

    def __call__(self) -> str:
        """Run the job; return its final state."""
        job, folder = self.job, job_dir(self.sweep_dir, self.job)
        os.makedirs(folder, exist_ok=True)
        progress = read_progress(job)
        if progress.complete:
            write_state(self.sweep_dir, job, 'done', returncode=0)
            return 'done'
        if progress.checkpoint_step is None and progress.started:
            self._discard_partial_runs(folder)
        resume = progress.checkpoint_step is not None
        argv = [sys.executable, 'main.py', *job.args, *(['--resume'] if resume else [])]
        write_state(self.sweep_dir, job, 'running', resumed_from=progress.checkpoint_step)
        log_path = os.path.join(folder, LOG_FILE)
        with open(log_path, 'a') as log:
            stamp = time.strftime('%Y-%m-%d %H:%M:%S')
            log.write(f'\n=== {stamp} on {socket.gethostname()}: {" ".join(argv[1:])}\n')
            log.flush()
            start = log.tell()
            self._process = subprocess.Popen(
                argv,
                cwd=self.repo_root,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_ignore_requeue_signal if self.shield_requeue_signal else None,
            )
            # Polling (not wait()) leaves the process free of Popen's lock, so submitit's
            # signal handler can reap main.py in ``checkpoint``.
            while self._process.poll() is None:
                time.sleep(0.5)
        returncode = self._process.returncode
        with open(log_path) as log:
            log.seek(start)
            attempt_output = log.read()
        return self._finish(returncode, attempt_output)

    def _finish(self, returncode: int, output: str) -> str:
        progress = read_progress(self.job)
        if returncode == 0 and progress.complete:
            state, details = 'done', {}
        elif returncode == 0:
            state, details = 'stopped', {'reason': 'interrupted; run the sweep again to resume'}
        else:
            reason = error_line(output)
            if returncode < 0:
                reason = f'killed by {signal.Signals(-returncode).name}; last line: {reason}'
            state, details = 'failed', {'error': reason}
        write_state(self.sweep_dir, self.job, state, returncode=returncode, **details)
        return state

    def _discard_partial_runs(self, folder: str) -> None:
        """Move logs of an attempt that left no checkpoint out of the run folders."""
        target = os.path.join(folder, 'discarded', time.strftime('%Y%m%d-%H%M%S'))
        for run_dir in self.job.run_dirs:
            if not os.path.isdir(run_dir):
                continue
            destination = os.path.join(target, os.path.basename(run_dir))
            os.makedirs(destination, exist_ok=True)
            for name in os.listdir(run_dir):
                shutil.move(os.path.join(run_dir, name), os.path.join(destination, name))

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Requeue hook for submitit: have main.py save a checkpoint, then requeue this runner."""
        import submitit

        process = self._process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            deadline = time.time() + CHECKPOINT_GRACE_S
            while time.time() < deadline:
                try:
                    pid, _ = os.waitpid(process.pid, os.WNOHANG)
                except ChildProcessError:  # already reaped
                    break
                if pid:
                    break
                time.sleep(0.5)
        write_state(self.sweep_dir, self.job, 'stopped', reason='requeued by SLURM')
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def queue_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    """SLURM's state of each listed job id (``PENDING``, ``RUNNING``, ...); None without squeue.

    Jobs SLURM no longer lists are absent from the result.
    """
    if shutil.which('squeue') is None:
        return None
    ids = sorted({str(i).split('_')[0] for i in job_ids})
    if not ids:
        return {}
    result = subprocess.run(
        ['squeue', '-h', '-r', '-o', '%i|%T', f'--jobs={",".join(ids)}'],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        # squeue fails when none of the ids is known any more.
        return {} if 'Invalid job id' in result.stderr else None
    states = {}
    for line in result.stdout.splitlines():
        job_id, _, state = line.partition('|')
        states[job_id.strip()] = state.strip()
    return states
