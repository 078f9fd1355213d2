"""Command line of ``python -m drol_jax.sweep``.

Usage::

    python -m drol_jax.sweep SWEEP_FILE[:ARGUMENT] --dry_run
    python -m drol_jax.sweep SWEEP_FILE[:ARGUMENT] [--launcher local --parallel N]
    python -m drol_jax.sweep SWEEP_FILE[:ARGUMENT] --launcher slurm --partition gpu ...
    python -m drol_jax.sweep status SWEEP_DIR

User mistakes print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Sequence

from drol_jax.cli import ArgumentParser, reports_user_errors
from drol_jax.errors import UserError
from drol_jax.files import write_json_atomic
from drol_jax.sweep import launchers
from drol_jax.sweep.spec import Job, Sweep, expand, load_sweep, repository_root, sweep_dir
from drol_jax.sweep.status import (
    SWEEP_FILE,
    format_status,
    load_jobs,
    sweep_statuses,
)

# Seed-updates per second of one job (updates/s x seeds trained together) used for the cost
# estimate when --updates_per_second is not given, and where it was measured.
DEFAULT_UPDATES_PER_SECOND = 21.3
UPDATES_PER_SECOND_SOURCE = (
    'DROL K=16 (47.0 ms/update) and FQL (46.7 ms) in fused blocks at the paper sizes, measured '
    'on a quiet 2-core AMD EPYC CPU without GPU (bench/RESULTS.md); pass --updates_per_second '
    'with your own figure (python bench/update_speed.py --seeds N on the target machine)'
)


def launch_parser() -> argparse.ArgumentParser:
    """Flags of the launching command."""
    parser = ArgumentParser(
        prog='python -m drol_jax.sweep',
        description='Launch a sweep (a grid of main.py runs) here or on SLURM; '
        '"python -m drol_jax.sweep status SWEEP_DIR" shows where it stands.',
    )
    parser.add_argument('sweep', metavar='SWEEP_FILE[:ARGUMENT]', help='e.g. sweeps/ogbench.py:fql')
    parser.add_argument(
        '--dry_run',
        action='store_true',
        help='print the jobs, runs, cost estimate and every command; launch nothing',
    )
    parser.add_argument('--launcher', choices=('local', 'slurm'), default='local')
    parser.add_argument(
        '--save_dir',
        default='exp',
        help='the sweep folder is SAVE_DIR/<sweep name> (runs in its runs/)',
    )
    parser.add_argument('--num_seeds', type=int, help="seeds per job (default: the sweep file's)")
    parser.add_argument(
        '--retry_failed', action='store_true', help='launch failed jobs again (default: skip)'
    )
    parser.add_argument(
        '--updates_per_second',
        type=float,
        default=DEFAULT_UPDATES_PER_SECOND,
        help='seed-updates per second of one job, for the cost estimate (default '
        f'{DEFAULT_UPDATES_PER_SECOND}: {UPDATES_PER_SECOND_SOURCE})',
    )
    local = parser.add_argument_group('local launcher')
    local.add_argument('--parallel', type=int, default=1, help='jobs at a time (default 1)')
    slurm = parser.add_argument_group('slurm launcher (submitit; one job array)')
    slurm.add_argument('--partition')
    slurm.add_argument('--gpus_per_node', type=int, default=1, help='GPUs per job (default 1)')
    slurm.add_argument('--cpus_per_task', type=int, help='CPUs per job (default: cluster)')
    slurm.add_argument('--mem_gb', type=float, help='memory per job in GB (default: cluster)')
    slurm.add_argument(
        '--time',
        type=int,
        default=1440,
        help='time limit per job in minutes (default 1440); '
        'at the limit a job checkpoints and requeues itself',
    )
    slurm.add_argument('--array_parallelism', type=int, default=256, help='jobs running at once')
    slurm.add_argument('--account')
    slurm.add_argument('--qos')
    slurm.add_argument(
        '--sbatch',
        action='append',
        default=[],
        metavar='KEY[=VALUE]',
        help='extra sbatch option, repeatable (e.g. --sbatch constraint=a100)',
    )
    slurm.add_argument(
        '--setup',
        action='append',
        default=[],
        metavar='LINE',
        help='shell line run before each job, repeatable (module load, source venv/bin/activate)',
    )
    slurm.add_argument(
        '--max_timeouts', type=int, default=10, help='requeues after time limits (default 10)'
    )
    slurm.add_argument('--python', help='interpreter on the nodes (default: this one)')
    return parser


def describe(
    sweep: Sweep, jobs: list[Job], folder: str, updates_per_second: float, commands: bool
) -> str:
    """The dry-run report: counts, cost estimate, notes and (optionally) every command."""
    runs = sum(len(job.seeds) for job in jobs)
    seeds = Counter(len(job.seeds) for job in jobs)
    per_job = ', '.join(f'{n} seeds' for n in sorted(seeds))
    seed_updates = sum(job.total_steps * len(job.seeds) for job in jobs)
    steps = sorted({job.total_steps for job in jobs})
    hours = seed_updates / updates_per_second / 3600
    shown_hours = f'{hours:,.0f}' if hours >= 10 else f'{hours:.2g}'
    lines = [
        f'sweep {sweep.name} ({sweep.source}): {len(jobs)} jobs, {runs} runs '
        f'({per_job} per job, trained together in one process)',
        f'folder: {folder} (runs in runs/, job states and logs in jobs/)',
        f'updates: {" or ".join(f"{s:,}" for s in steps)} per run, {seed_updates:,} in all',
        f'estimate: {shown_hours} device-hours of training at {updates_per_second:g} '
        'seed-updates/s per job (evaluation not counted)',
    ]
    if updates_per_second == DEFAULT_UPDATES_PER_SECOND:
        lines.append(f'  that rate: {UPDATES_PER_SECOND_SOURCE}')
    # A preset that does not apply (a third-party agent file, an unknown task family) is
    # worth a line: those jobs run with the agent file's defaults.
    notes = Counter(
        job.preset_note for job in jobs if job.preset != 'none' and not job.preset_values
    )
    for note, count in sorted(notes.items()):
        lines.append(f'note ({count} job{"s" if count > 1 else ""}): {note}')
    if commands:
        lines.append(
            f'commands, run from {repository_root()} (a job adds --resume when its run folders '
            'hold a checkpoint):'
        )
        lines += [job.command for job in jobs]
    return '\n'.join(lines)


def write_sweep_file(sweep: Sweep, jobs: list[Job], folder: str) -> None:
    """Record the sweep's jobs in ``<folder>/sweep.json`` (what ``status`` reads)."""
    os.makedirs(folder, exist_ok=True)
    payload = {
        'name': sweep.name,
        'source': sweep.source,
        'jobs': [job.__dict__ for job in jobs],
    }
    write_json_atomic(os.path.join(folder, SWEEP_FILE), payload)


def slurm_options(args: argparse.Namespace) -> launchers.SlurmOptions:
    """The sbatch settings from the command line (checked before anything is written)."""
    return launchers.SlurmOptions(
        partition=args.partition,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb,
        time_min=args.time,
        array_parallelism=args.array_parallelism,
        account=args.account,
        qos=args.qos,
        sbatch=launchers.parse_sbatch_lines(args.sbatch),
        setup=tuple(args.setup),
        max_timeouts=args.max_timeouts,
        python=args.python,
    )


def launch_main(argv: Sequence[str]) -> int:
    """Dry-run or launch a sweep."""
    args = launch_parser().parse_args(argv)
    if args.updates_per_second <= 0:
        raise UserError(f'--updates_per_second must be > 0, got {args.updates_per_second}.')
    if args.parallel < 1:
        raise UserError(f'--parallel must be >= 1, got {args.parallel}.')
    options = slurm_options(args)
    sweep = load_sweep(args.sweep)
    jobs = expand(sweep, args.save_dir, args.num_seeds)
    folder = sweep_dir(args.save_dir, sweep)
    if args.dry_run:
        print(describe(sweep, jobs, folder, args.updates_per_second, commands=True))
        return 0
    print(describe(sweep, jobs, folder, args.updates_per_second, commands=False))
    plan = launchers.plan_launch(sweep_statuses(folder, jobs), args.retry_failed)
    print(f'jobs: {plan.summary()}', flush=True)
    write_sweep_file(sweep, jobs, folder)
    if not plan.launch:
        return 0
    root = str(repository_root())
    if args.launcher == 'local':
        results = launchers.run_local(plan.launch, folder, root, args.parallel)
        counts = Counter(results.values())
        print('finished: ' + ', '.join(f'{n} {state}' for state, n in sorted(counts.items())))
        print(f'status: python -m drol_jax.sweep status {folder}')
        return 1 if counts.get('failed') else 0
    ids = launchers.submit_slurm(plan.launch, folder, root, sweep.name, options)
    print(f'submitted {len(ids)} jobs as SLURM array {ids[0].split("_")[0]}')
    print(f'status: python -m drol_jax.sweep status {folder}')
    return 0


def status_main(argv: Sequence[str]) -> int:
    """Print one line per job and the totals."""
    parser = ArgumentParser(
        prog='python -m drol_jax.sweep status', description='Where every job of a sweep stands.'
    )
    parser.add_argument('sweep_dir', metavar='SWEEP_DIR', help='e.g. exp/ogbench_drol16')
    args = parser.parse_args(argv)
    payload, jobs = load_jobs(args.sweep_dir)
    print(f'sweep {payload["name"]} ({payload["source"]}) in {os.path.abspath(args.sweep_dir)}')
    print(format_status(sweep_statuses(args.sweep_dir, jobs)))
    return 0


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to ``status`` or the launcher; user mistakes become one ``error:`` line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ['status']:
            return status_main(argv[1:])
        return launch_main(argv)
    except KeyboardInterrupt:
        return 130
