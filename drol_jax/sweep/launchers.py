"""Launching a sweep's jobs: the launch plan, and the local launcher (SLURM: ``slurm.py``).

Launching is idempotent: a job whose runs are complete is skipped, a queued or running one is
left alone, a stopped one resumes from its checkpoint, and a failed one runs again only with
``retry_failed``. Each launched job's old ``state.json`` is removed first, so the state files
always describe the latest attempt.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from drol_jax.files import write_json_atomic
from drol_jax.sweep.gpus import Slot
from drol_jax.sweep.jobs import STATE_FILE, SUBMITTED_FILE, JobRunner, job_dir, read_json
from drol_jax.sweep.spec import Job
from drol_jax.sweep.status import JobStatus


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


def forget_state(sweep_dir: str, job: Job) -> dict | None:
    """Remove the job's ``state.json`` (a new attempt starts); return what it said."""
    path = os.path.join(job_dir(sweep_dir, job), STATE_FILE)
    previous = read_json(path)
    if os.path.exists(path):
        os.remove(path)
    return previous


def restore_state(sweep_dir: str, job: Job, previous: dict | None) -> None:
    """Put back a ``state.json`` that ``forget_state`` removed (the launch did not happen)."""
    if previous is not None:
        write_json_atomic(os.path.join(job_dir(sweep_dir, job), STATE_FILE), previous)


def mark_submitted(sweep_dir: str, job: Job, **record: Any) -> None:
    """Record who took the job in its ``submitted.json`` (launcher, host and PID, SLURM id)."""
    folder = job_dir(sweep_dir, job)
    os.makedirs(folder, exist_ok=True)
    write_json_atomic(os.path.join(folder, SUBMITTED_FILE), {'time': time.time(), **record})


class LocalLauncher:
    """Runs jobs on this machine, each in a slot (a GPU share or a CPU place) as one frees up.

    ``stop(signum)`` (the command line calls it on SIGINT and SIGTERM) forwards the signal to
    every running main.py, which saves a checkpoint and exits; jobs not started yet are not
    started and stay pending, so launching the sweep again resumes everything. A second
    ``stop`` kills the running jobs without waiting for their checkpoint.
    """

    def __init__(
        self,
        jobs: list[Job],
        sweep_dir: str,
        repo_root: str,
        slots: list[Slot],
        say: Callable[[str], None] = print,
    ):
        self.jobs = jobs
        self.sweep_dir = sweep_dir
        self.repo_root = repo_root
        self.slots = slots
        self._say = say
        # Re-entrant: ``stop`` runs in a signal handler, possibly while the main thread prints
        # or while an earlier ``stop`` holds the lock.
        self._lock = threading.RLock()
        self._running: dict[str, JobRunner] = {}
        self._started: set[str] = set()
        self.stopped_by: int | None = None

    def say(self, message: str) -> None:
        """Print one line (from any thread, or from the signal handler)."""
        with self._lock:
            self._say(message)

    def run(self) -> dict[str, str]:
        """Run every job; return each job's final state by key (``pending``: never started)."""
        for job in self.jobs:
            forget_state(self.sweep_dir, job)
            mark_submitted(
                self.sweep_dir, job, launcher='local', host=socket.gethostname(), pid=os.getpid()
            )
        free: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        for slot in self.slots:
            free.put(slot)
        show_where = any(slot.gpu is not None for slot in self.slots)

        def run_one(index: int, job: Job) -> str:
            slot = free.get()
            try:
                with self._lock:
                    if self.stopped_by is not None:
                        return 'pending'
                    runner = JobRunner(
                        job,
                        self.sweep_dir,
                        self.repo_root,
                        shield_requeue_signal=False,
                        env=slot.env,
                    )
                    self._running[job.key] = runner
                    self._started.add(job.key)
                    where = f' on {slot.where}' if show_where else ''
                    self.say(f'[{index}/{len(self.jobs)}] start    {job.key}{where}')
                return runner()
            finally:
                with self._lock:
                    self._running.pop(job.key, None)
                free.put(slot)

        results: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=len(self.slots)) as pool:
            futures = {pool.submit(run_one, i, job): job for i, job in enumerate(self.jobs, 1)}
            for future in as_completed(futures):
                job = futures[future]
                results[job.key] = state = future.result()
                if state != 'pending':
                    self.say(f'{state:<8} {job.key}')
        return results

    def stop(self, signum: int) -> None:
        """Forward ``signum`` to the running jobs and start no other; kill them when repeated."""
        name = signal.Signals(signum).name
        with self._lock:
            running = list(self._running.values())
            if self.stopped_by is not None:
                for runner in running:
                    runner.kill()
                self.say(
                    f'received {name} again: killed {len(running)} running job(s) without a '
                    'checkpoint; they resume from their last one when the sweep is launched again.'
                )
                return
            self.stopped_by = signum
            pids = [pid for pid in (runner.stop(signum) for runner in running) if pid]
            waiting = len(self.jobs) - len(self._started)
            shown = f' (main.py pid {", ".join(map(str, pids))})' if pids else ''
            self.say(
                f'received {name}: forwarded it to {len(running)} running job(s){shown}, which '
                f'save a checkpoint and stop; {waiting} job(s) not started stay pending. Waiting '
                f'for the running ones to exit ({name} again kills them at once); launch the '
                'sweep again to resume.'
            )
