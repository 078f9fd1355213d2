"""Command line of ``python -m drol_jax.sweep``.

Usage::

    python -m drol_jax.sweep SWEEP_FILE[:ARGUMENT] --dry_run [--device_check FILE --gpus 8 ...]
    python -m drol_jax.sweep SWEEP_FILE[:ARGUMENT] [--launcher local --parallel N]
    python -m drol_jax.sweep SWEEP_FILE[:ARGUMENT] [--gpus 0,1 --jobs_per_gpu M]
    python -m drol_jax.sweep SWEEP_FILE[:ARGUMENT] --launcher slurm --partition gpu ...
    python -m drol_jax.sweep status SWEEP_DIR

User mistakes print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections import Counter
from collections.abc import Sequence

from drol_jax.cli import ArgumentParser, reports_user_errors
from drol_jax.errors import UserError
from drol_jax.files import write_json_atomic
from drol_jax.sweep import cost
from drol_jax.sweep import gpus as gpu_placement
from drol_jax.sweep.cost import DEVICE_CHECK_TOOL
from drol_jax.sweep.jobs import STOP_SIGNALS
from drol_jax.sweep.launchers import LocalLauncher, plan_launch
from drol_jax.sweep.slurm import SlurmOptions, parse_sbatch_lines, submit_slurm
from drol_jax.sweep.spec import Job, Sweep, expand, load_sweep, repository_root, sweep_dir
from drol_jax.sweep.status import (
    SWEEP_FILE,
    format_status,
    load_jobs,
    sweep_statuses,
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
    cost = parser.add_argument_group('cost estimate and node plan')
    cost.add_argument(
        '--device_check',
        metavar='FILE',
        help=f'rates measured by python {DEVICE_CHECK_TOOL} on the target machine (its JSON)',
    )
    cost.add_argument(
        '--updates_per_second',
        type=float,
        help='seed-updates per second of one job (updates/s x seeds), applied to every job '
        "(default: each job at its own settings from the development CPU's measured rates)",
    )
    gpus = parser.add_argument_group('GPUs (local launcher; with --dry_run: the node to plan)')
    gpus.add_argument(
        '--gpus',
        help='GPUs to use: a count (the first N visible) or ids such as 0,1,3 (one id: 3,); '
        'default: every visible GPU; with --dry_run, the GPUs of the node the plan is for',
    )
    gpus.add_argument(
        '--jobs_per_gpu',
        type=int,
        default=1,
        help='jobs sharing one GPU, each in its own process (default 1; SLURM: jobs per GPU '
        'of each array task)',
    )
    gpus.add_argument(
        '--gpu_memory',
        choices=gpu_placement.MEMORY_MODES,
        default='share',
        help='with several jobs per GPU: share (each preallocates (1 - '
        f'{gpu_placement.MEMORY_HEADROOM:g}) / M of the GPU, default) or grow (no '
        'preallocation: each allocates what it uses)',
    )
    local = parser.add_argument_group('local launcher')
    local.add_argument(
        '--parallel',
        type=int,
        help='jobs at a time (default: 1 on a CPU, GPUs x --jobs_per_gpu on GPUs)',
    )
    slurm = parser.add_argument_group('slurm launcher (submitit; one job array)')
    slurm.add_argument('--partition')
    slurm.add_argument(
        '--gpus_per_node',
        type=int,
        default=1,
        help='GPUs per array task (default 1; 0 for CPU nodes); a task runs max(1, this) x '
        '--jobs_per_gpu jobs side by side, one GPU each',
    )
    slurm.add_argument('--cpus_per_task', type=int, help='CPUs per array task (default: cluster)')
    slurm.add_argument(
        '--mem_gb', type=float, help='memory per array task in GB (default: cluster)'
    )
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


def rate_table(args: argparse.Namespace) -> cost.RateTable:
    """Where the cost estimate's update times come from (``UserError`` for a bad choice)."""
    if args.device_check and args.updates_per_second is not None:
        raise UserError('give --device_check or --updates_per_second, not both.')
    if args.updates_per_second is not None:
        if args.updates_per_second <= 0:
            raise UserError(f'--updates_per_second must be > 0, got {args.updates_per_second}.')
        return cost.flat_rate(args.updates_per_second)
    if args.device_check:
        return cost.load_device_check(args.device_check)
    return cost.CPU_RATES


def describe(sweep: Sweep, jobs: list[Job], folder: str) -> list[str]:
    """The head of the dry-run report: counts, updates and notes."""
    runs = sum(len(job.seeds) for job in jobs)
    seeds = Counter(len(job.seeds) for job in jobs)
    per_job = ', '.join(f'{n} seed{"s" if n > 1 else ""}' for n in sorted(seeds))
    seed_updates = sum(job.total_steps * len(job.seeds) for job in jobs)
    steps = sorted({job.total_steps for job in jobs})
    lines = [
        f'sweep {sweep.name} ({sweep.source}): {len(jobs)} jobs, {runs} runs '
        f'({per_job} per job{", trained together in one process" if max(seeds) > 1 else ""})',
        f'folder: {folder} (runs in runs/, job states and logs in jobs/)',
        f'updates: {" or ".join(f"{s:,}" for s in steps)} per run, {seed_updates:,} in all',
    ]
    # A preset that does not apply (a third-party agent file, an unknown task family) is
    # worth a line: those jobs run with the agent file's defaults.
    notes = Counter(
        job.preset_note for job in jobs if job.preset != 'none' and not job.preset_values
    )
    for note, count in sorted(notes.items()):
        lines.append(f'note ({count} job{"s" if count > 1 else ""}): {note}')
    return lines


def cost_lines(
    table: cost.RateTable, jobs: list[Job], args: argparse.Namespace, gpu_count: int | None
) -> list[str]:
    """The cost estimate and, for a node of ``gpu_count`` GPUs, its plan."""
    lines = cost.describe_cost(table, jobs)
    if gpu_count:
        packed = args.launcher == 'slurm'
        lines += cost.describe_plan(table, jobs, gpu_count, args.jobs_per_gpu, packed)
    elif args.jobs_per_gpu > 1:
        lines.append('plan: pass --gpus N (the GPUs of the node) for the wall-clock of the sweep')
    return lines


def plan_gpu_count(args: argparse.Namespace) -> int | None:
    """How many GPUs the dry run plans for: ``--gpus``, else this machine's visible ones."""
    requested = gpu_placement.parse_gpus(args.gpus)
    if isinstance(requested, int):
        return requested
    if isinstance(requested, list):
        return len(requested)
    return len(gpu_placement.visible_gpus()[0]) or None


def local_slots(args: argparse.Namespace) -> tuple[list[gpu_placement.Slot], str]:
    """The local launcher's places (GPU shares, or CPU places) and the line that explains them."""
    requested = gpu_placement.parse_gpus(args.gpus)
    visible, how = gpu_placement.visible_gpus()
    chosen = gpu_placement.choose_gpus(requested, visible, how)
    if not chosen:
        slots = gpu_placement.make_slots([], 1, args.gpu_memory, args.parallel or 1)
        line = gpu_placement.describe_slots(slots, 1, how)
        if args.jobs_per_gpu > 1:
            line += f'; --jobs_per_gpu {args.jobs_per_gpu} has no effect without a GPU'
        return slots, line
    slots = gpu_placement.make_slots(chosen, args.jobs_per_gpu, args.gpu_memory, 0)
    if args.parallel is not None:
        if args.parallel > len(slots):
            raise UserError(
                f'--parallel {args.parallel}: the {len(chosen)} GPU(s) x --jobs_per_gpu '
                f'{args.jobs_per_gpu} give {len(slots)} places; raise --jobs_per_gpu instead.'
            )
        slots = slots[: args.parallel]
    return slots, gpu_placement.describe_slots(slots, args.jobs_per_gpu, how)


def write_sweep_file(sweep: Sweep, jobs: list[Job], folder: str) -> None:
    """Record the sweep's jobs in ``<folder>/sweep.json`` (what ``status`` reads)."""
    os.makedirs(folder, exist_ok=True)
    payload = {
        'name': sweep.name,
        'source': sweep.source,
        'jobs': [job.__dict__ for job in jobs],
    }
    write_json_atomic(os.path.join(folder, SWEEP_FILE), payload)


def slurm_options(args: argparse.Namespace) -> SlurmOptions:
    """The sbatch settings from the command line (checked before anything is written)."""
    return SlurmOptions(
        partition=args.partition,
        gpus_per_node=args.gpus_per_node,
        jobs_per_gpu=args.jobs_per_gpu,
        gpu_memory=args.gpu_memory,
        cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb,
        time_min=args.time,
        array_parallelism=args.array_parallelism,
        account=args.account,
        qos=args.qos,
        sbatch=parse_sbatch_lines(args.sbatch),
        setup=tuple(args.setup),
        max_timeouts=args.max_timeouts,
        python=args.python,
    )


def check_counts(args: argparse.Namespace) -> None:
    """Counts that must be positive, and options that do not go with the launcher."""
    for name in ('parallel', 'jobs_per_gpu'):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f'--{name} must be >= 1, got {value}.')
    if args.gpus_per_node < 0:
        raise UserError(f'--gpus_per_node must be >= 0, got {args.gpus_per_node}.')
    if args.launcher == 'slurm' and args.gpus and not args.dry_run:
        raise UserError(
            '--gpus picks GPUs of this machine (local launcher) or the node a --dry_run plans; '
            'on SLURM each array task gets --gpus_per_node GPUs.'
        )


def run_local(launcher: LocalLauncher) -> dict[str, str]:
    """Run the local launcher with SIGINT and SIGTERM forwarded to its jobs."""
    previous = {
        sig: signal.signal(sig, lambda signum, frame: launcher.stop(signum)) for sig in STOP_SIGNALS
    }
    try:
        return launcher.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def launch_main(argv: Sequence[str]) -> int:
    """Dry-run or launch a sweep."""
    args = launch_parser().parse_args(argv)
    check_counts(args)
    table = rate_table(args)
    options = slurm_options(args)
    sweep = load_sweep(args.sweep)
    jobs = expand(sweep, args.save_dir, args.num_seeds)
    folder = sweep_dir(args.save_dir, sweep)
    if args.dry_run:
        lines = describe(sweep, jobs, folder) + cost_lines(table, jobs, args, plan_gpu_count(args))
        lines.append(
            f'commands, run from {repository_root()} (a job adds --resume when its run folders '
            'hold a checkpoint):'
        )
        print('\n'.join(lines + [job.command for job in jobs]))
        return 0
    slots, placement = local_slots(args) if args.launcher == 'local' else ([], '')
    gpu_count = len({slot.gpu for slot in slots if slot.gpu is not None})
    try:
        estimate = cost_lines(table, jobs, args, gpu_count)
    except UserError as e:  # The launch does not depend on the estimate.
        estimate = [f'estimate: not available ({e})']
    print('\n'.join(describe(sweep, jobs, folder) + estimate))
    plan = plan_launch(sweep_statuses(folder, jobs), args.retry_failed)
    print(f'jobs: {plan.summary()}', flush=True)
    write_sweep_file(sweep, jobs, folder)
    if not plan.launch:
        return 0
    root = str(repository_root())
    if args.launcher == 'local':
        print(placement, flush=True)
        launcher = LocalLauncher(plan.launch, folder, root, slots)
        counts = Counter(run_local(launcher).values())
        print('finished: ' + ', '.join(f'{n} {state}' for state, n in sorted(counts.items())))
        print(f'status: python -m drol_jax.sweep status {folder}')
        if launcher.stopped_by is not None:
            return 128 + launcher.stopped_by
        return 1 if counts.get('failed') else 0
    ids = submit_slurm(plan.launch, folder, root, sweep.name, options)
    tasks = sorted(set(ids), key=ids.index)
    packing = f' in {len(tasks)} array tasks' if len(tasks) != len(ids) else ''
    print(f'submitted {len(ids)} jobs{packing} as SLURM array {ids[0].split("_")[0]}')
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
