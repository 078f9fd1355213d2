"""Where every job of a sweep stands: ``python -m drol_jax.sweep status SWEEP_DIR``.

A job is ``done`` when every seed's ``summary.json`` says complete; ``running`` while its
process runs; ``pending`` while it waits in a queue, and also when it never started (not
launched yet, or its launcher or SLURM job ended first); ``failed`` when main.py exited with an
error; ``stopped`` when it was interrupted after it started (a signal at any moment, a lost
node) and will resume when the sweep is launched again. Queued and running states are checked
with ``squeue`` for SLURM jobs and by PID for local ones, so a job killed without a word is not
shown as running forever.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket

from drol_jax.errors import UserError
from drol_jax.sweep.jobs import (
    STATE_FILE,
    SUBMITTED_FILE,
    Progress,
    job_dir,
    queue_states,
    read_json,
    read_progress,
)
from drol_jax.sweep.spec import Job

SWEEP_FILE = 'sweep.json'
STATES = ('done', 'running', 'pending', 'stopped', 'failed')
# squeue states in which a job still exists (waiting, starting, running or being requeued).
LIVE_QUEUE_STATES = {
    'PENDING',
    'CONFIGURING',
    'RUNNING',
    'COMPLETING',
    'REQUEUED',
    'REQUEUE_FED',
    'REQUEUE_HOLD',
    'RESIZING',
    'SIGNALING',
    'STAGE_OUT',
    'SUSPENDED',
    'STOPPED',
}


@dataclasses.dataclass(frozen=True)
class JobStatus:
    """One job's state; ``active`` means a launcher must leave it alone (queued or running)."""

    job: Job
    state: str
    active: bool
    detail: str
    progress: Progress


def _pid_alive(record: dict) -> bool | None:
    """Whether the recorded local process lives; None when it ran on another host."""
    if record.get('host') != socket.gethostname() or not record.get('pid'):
        return None
    try:
        os.kill(int(record['pid']), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def job_status(job: Job, sweep_dir: str, queue: dict[str, str] | None) -> JobStatus:
    """Combine the run folders, the job's state files and the queue into one state.

    ``queue`` maps SLURM job ids to squeue states (None: squeue unavailable, trust the files).
    """
    progress = read_progress(job)
    if progress.complete:
        return JobStatus(job, 'done', False, '', progress)
    folder = job_dir(sweep_dir, job)
    state = read_json(os.path.join(folder, STATE_FILE))
    submitted = read_json(os.path.join(folder, SUBMITTED_FILE))
    if state is None and submitted is None:
        return JobStatus(job, 'pending', False, 'not launched', progress)
    if state is not None and state['state'] == 'failed':
        # Final even while its SLURM task runs on (the other jobs of a pack) or is requeued.
        return JobStatus(job, 'failed', False, state.get('error') or 'failed', progress)
    record = state or submitted
    slurm_id = record.get('slurm_job_id') or (submitted or {}).get('slurm_job_id')
    alive: bool | None
    if slurm_id and queue is not None:
        queued = queue.get(slurm_id)
        if queued in LIVE_QUEUE_STATES:
            if queued == 'RUNNING':
                return JobStatus(job, 'running', True, f'slurm {slurm_id}', progress)
            detail = f'slurm {slurm_id} {queued.lower()}'
            return JobStatus(job, 'pending', True, detail, progress)
        alive = False
    elif slurm_id:
        alive = None
    else:
        alive = _pid_alive(record)
    where = f'slurm {slurm_id}' if slurm_id else f'pid {record.get("pid")}'
    recorded = state['state'] if state else 'submitted'
    if recorded in ('running', 'submitted') and alive is not False:
        name = 'running' if recorded == 'running' else 'pending'
        return JobStatus(job, name, True, where, progress)
    if recorded == 'running':
        return JobStatus(job, 'stopped', False, f'{where} ended without a word', progress)
    if recorded == 'submitted':
        detail = f'not started ({where} ended before starting it); the next launch starts it'
        return JobStatus(job, 'pending', False, detail, progress)
    return JobStatus(job, 'stopped', False, state.get('reason', ''), progress)


def load_jobs(sweep_dir: str) -> tuple[dict, list[Job]]:
    """The sweep's ``sweep.json`` and its jobs; ``UserError`` when the folder is no sweep."""
    path = os.path.join(sweep_dir, SWEEP_FILE)
    if not os.path.isfile(path):
        raise UserError(f'{sweep_dir!r} is not a sweep folder (no {SWEEP_FILE}).')
    try:
        with open(path) as f:
            payload = json.load(f)
        return payload, [Job.from_dict(entry) for entry in payload['jobs']]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f'{path}: not a readable sweep description ({e}).') from e


def sweep_statuses(sweep_dir: str, jobs: list[Job]) -> list[JobStatus]:
    """Every job's status, asking squeue once for all SLURM jobs."""
    ids = []
    for job in jobs:
        folder = job_dir(sweep_dir, job)
        for name in (STATE_FILE, SUBMITTED_FILE):
            record = read_json(os.path.join(folder, name)) or {}
            if record.get('slurm_job_id'):
                ids.append(record['slurm_job_id'])
    queue = queue_states(ids) if ids else {}
    return [job_status(job, sweep_dir, queue) for job in jobs]


def format_status(statuses: list[JobStatus]) -> str:
    """One line per job (state, step, last success, label, job) and the totals."""
    rows = []
    for status in statuses:
        progress, job = status.progress, status.job
        step = '-' if progress.step is None else f'{progress.step}'
        success = '-' if progress.success is None else f'{100 * progress.success:.1f}%'
        rows.append(
            (status.state, f'{step}/{job.total_steps}', success, job.label, job.key, status.detail)
        )
    header = (
        'state',
        'step',
        'success',
        'label',
        'job',
        'detail' if any(r[5] for r in rows) else '',
    )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    lines = []
    for row in [header, *rows]:
        cells = [row[i].rjust(widths[i]) if i == 1 else row[i].ljust(widths[i]) for i in range(5)]
        lines.append('  '.join([*cells, row[5]]).rstrip())
    counts = {name: sum(s.state == name for s in statuses) for name in STATES}
    runs = sum(len(s.job.seeds) for s in statuses)
    totals = ', '.join(f'{counts[name]} {name}' for name in STATES)
    lines.append(f'totals: {totals} ({len(statuses)} jobs, {runs} runs)')
    return '\n'.join(lines)
