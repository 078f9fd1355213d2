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
import threading
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
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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


def stop_signal_of(returncode: int) -> signal.Signals | None:
    """The signal (SIGTERM, SIGINT) that stopped main.py, read from its exit status, or None.

    main.py stopped after its training loop started saves a checkpoint and exits 0; before that
    it exits with 128 + the signal number, and a process the signal killed outright exits with
    the negative signal number.
    """
    for sig in STOP_SIGNALS:
        if returncode in (-sig, 128 + sig):
            return sig
    return None


class JobRunner:
    """Runs one job's ``main.py`` command to its end.

    Each call resumes from the newest checkpoint all seed folders share (``--resume``), or
    starts afresh; files of an attempt that died before its first checkpoint are moved to
    ``jobs/<key>/discarded/<time>/`` first, because main.py never overwrites a run. Returns the
    final state (``done``, ``stopped`` or ``failed``; ``pending`` when ``stop`` came before the
    start) and records it in ``state.json``. ``env`` holds the variables the job gets on top of
    this process's environment (its GPU and memory share).

    A job stopped by a signal (SIGTERM, SIGINT: a preemption, ``scancel``, Ctrl-C) is
    ``stopped``, never ``failed``, at whatever moment it arrived: the next launch resumes it.
    """

    def __init__(
        self,
        job: Job,
        sweep_dir: str,
        repo_root: str,
        shield_requeue_signal: bool,
        env: dict[str, str] | None = None,
    ):
        self.job = job
        self.sweep_dir = sweep_dir
        self.repo_root = repo_root
        self.shield_requeue_signal = shield_requeue_signal
        self.env = dict(env or {})
        self._init_process_state()

    def _init_process_state(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._stop_signal: int | None = None
        self._killed = False

    def __getstate__(self) -> dict:
        # submitit pickles runners again when it requeues them: no live process, lock or request.
        return {
            k: v
            for k, v in self.__dict__.items()
            if k not in ('_lock', '_process', '_stop_signal', '_killed')
        }

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_process_state()

    @property
    def pid(self) -> int | None:
        """main.py's process id while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def stop(self, signum: int) -> int | None:
        """Forward ``signum`` to main.py (it saves a checkpoint and exits); return its PID.

        Before main.py starts, the request keeps it from starting (the job stays pending).
        """
        with self._lock:
            if self._stop_signal is None:
                self._stop_signal = signum
            pid = self.pid
            if pid is not None:
                self._process.send_signal(signum)
            return pid

    def kill(self) -> None:
        """End main.py at once (SIGKILL); the job resumes from its last checkpoint."""
        with self._lock:
            self._killed = True
            if self.pid is not None:
                self._process.kill()

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
        log_path = os.path.join(folder, LOG_FILE)
        with open(log_path, 'a') as log:
            with self._lock:
                if self._stop_signal is not None:
                    return 'pending'
                stamp = time.strftime('%Y-%m-%d %H:%M:%S')
                where = ', '.join(f'{k}={v}' for k, v in self.env.items())
                log.write(
                    f'\n=== {stamp} on {socket.gethostname()}{f" ({where})" if where else ""}: '
                    f'{" ".join(argv[1:])}\n'
                )
                log.flush()
                start = log.tell()
                self._process = subprocess.Popen(
                    argv,
                    cwd=self.repo_root,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **self.env},
                    preexec_fn=_ignore_requeue_signal if self.shield_requeue_signal else None,
                )
                write_state(
                    self.sweep_dir,
                    job,
                    'running',
                    resumed_from=progress.checkpoint_step,
                    main_pid=self._process.pid,
                    env=self.env,
                )
            # Polling (not wait()) leaves the process free of Popen's lock for ``stop``.
            while self._process.poll() is None:
                time.sleep(0.5)
        with open(log_path) as log:
            log.seek(start)
            attempt_output = log.read()
        return self._finish(self._process.returncode, attempt_output)

    def _finish(self, returncode: int, output: str) -> str:
        """Classify main.py's exit, record it in ``state.json`` and return the state."""
        progress = read_progress(self.job)
        stopped_by = stop_signal_of(returncode)
        details: dict[str, Any] = {}
        if returncode == 0 and progress.complete:
            state = 'done'
        elif returncode == 0:
            state, details = 'stopped', {'reason': 'interrupted; run the sweep again to resume'}
        elif stopped_by is not None or self._killed:
            how = 'killed by the launcher' if self._killed else f'stopped by {stopped_by.name}'
            if returncode > 0:
                how += ' during start-up'
            step = progress.checkpoint_step
            then = f'resumes from step {step}' if step is not None else 'starts it again'
            state, details = 'stopped', {'reason': f'{how}; the next launch {then}'}
        else:
            reason = error_line(output)
            if returncode < 0:
                reason = f'killed by {signal.Signals(-returncode).name}; last line: {reason}'
            state, details = 'failed', {'error': reason}
        write_state(self.sweep_dir, self.job, state, returncode=returncode, env=self.env, **details)
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
