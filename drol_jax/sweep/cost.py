"""What a sweep costs: each job's time at its own settings, and the wall-clock of a GPU node.

A job's time is its updates times the time of one update (all its seeds vmapped) at its
settings: the agent, K (DROL's ``num_candidates``), the network sizes and the batch, the number
of seeds, and how many jobs share a GPU. The update times come from one of three sources, and
every estimate says which:

- ``bench/device_check.py``'s JSON (``--device_check``): measured on the machine that will run
  the sweep (DROL(16), DROL(64) and FQL at the paper's sizes, 1, 8 and 32 seeds, 1, 2 and 4 jobs
  per GPU, with the compilation time of each);
- ``--updates_per_second``: one figure (seed-updates/s per job) applied to every job;
- otherwise the figures measured on the development machine's 2-core CPU (``CPU_RATES``).

Between measured points the time is interpolated linearly: in K (DROL's cost is affine in K:
only its gradient-free routing pass grows with it) and in the number of seeds. Below the
smallest measured K or seed count the smallest one's time is used (an upper bound); above the
largest, the time grows in proportion to the seeds, and linearly in K. Agents that were not
measured are estimated at FQL's rate, and network sizes that were not measured are scaled from
the nearest measured ones by the matrix sizes; each estimate lists what it derived this way.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
from collections.abc import Mapping, Sequence

from drol_jax.errors import UserError
from drol_jax.sweep.spec import Job

PAPER_SIZES = ((512, 512, 512, 512), 256)
TOY_SIZES = ((64, 64), 64)
# Rough input and output width of the networks when sizes are compared (OGBench's
# observations and actions: tens of numbers).
NOMINAL_IO_WIDTH = 32
DEVICE_CHECK_TOOL = 'bench/device_check.py'


@dataclasses.dataclass(frozen=True)
class Rate:
    """One measured update time: ``seconds_per_update`` of one update of all ``seeds``."""

    agent: str  # 'drol' or 'fql'
    num_candidates: int | None
    hidden: tuple[int, ...]
    batch_size: int
    seeds: int
    jobs_per_gpu: int
    seconds_per_update: float
    # Seconds before the first update: the compilation (device check), or the whole start-up of
    # main.py (imports, data, compilation) where that was measured.
    startup_s: float | None = None


@dataclasses.dataclass(frozen=True)
class RateTable:
    """Where the update times come from: measured rates, or one flat figure for every job."""

    source: str
    rates: tuple[Rate, ...] = ()
    flat_seed_updates_per_second: float | None = None
    measured_on_gpu: bool = False

    @property
    def jobs_per_gpu_measured(self) -> tuple[int, ...]:
        """The job counts per GPU the table has rates for."""
        return tuple(sorted({rate.jobs_per_gpu for rate in self.rates}))


def _cpu_rates() -> tuple[Rate, ...]:
    """The development CPU's measurements (bench/RESULTS.md): one job at a time."""
    # Fused blocks of one seed at the paper's sizes (ms per update, quiet machine).
    paper = [('drol', 1, 30.7), ('drol', 4, 33.6), ('drol', 16, 47.0), ('drol', 64, 115.8)]
    paper.append(('fql', None, 46.7))
    rates = [Rate(a, k, *PAPER_SIZES, 1, 1, ms / 1e3) for a, k, ms in paper]
    # The toy sweep's jobs (2 seeds) as main.py measured them, with their start-up (busy machine).
    toy = [('drol', 16, 90.0, 51.0), ('fql', None, 191.2, 57.0)]
    rates += [Rate(a, k, *TOY_SIZES, 2, 1, 1 / per_s, up) for a, k, per_s, up in toy]
    return tuple(rates)


CPU_RATES = RateTable(
    source='fused blocks measured on the 2-core AMD EPYC CPU of the development machine, no GPU '
    "(bench/RESULTS.md): DROL K=1, 4, 16, 64 and FQL at the paper's sizes (quiet machine), "
    'DROL(16) and FQL jobs of the toy sweep with their start-up (busy machine: an upper bound); '
    'on a CPU more seeds share the same cores. For your machine: --device_check (python '
    'bench/device_check.py) or --updates_per_second',
    rates=_cpu_rates(),
)


def flat_rate(seed_updates_per_second: float) -> RateTable:
    """``--updates_per_second``: the same seed-updates/s for every job."""
    return RateTable(
        source=f'{seed_updates_per_second:g} seed-updates/s per job for every job '
        '(--updates_per_second)',
        flat_seed_updates_per_second=seed_updates_per_second,
    )


def load_device_check(path: str) -> RateTable:
    """The rates a ``bench/device_check.py`` run wrote; ``UserError`` if the file is not one."""
    try:
        with open(path) as f:
            payload = json.load(f)
        if payload.get('tool') != DEVICE_CHECK_TOOL:
            raise KeyError('tool')
        rates = tuple(
            Rate(
                agent=r['agent'],
                num_candidates=r.get('num_candidates'),
                hidden=tuple(r['hidden']),
                batch_size=int(r['batch_size']),
                seeds=int(r['seeds']),
                jobs_per_gpu=int(r['jobs_per_gpu']),
                seconds_per_update=float(r['seconds_per_update']),
                startup_s=r.get('compile_s'),
            )
            for r in payload['rates']
            if r.get('mode') == 'fused' and r.get('seconds_per_update')
        )
        device = payload['device']
    except OSError as e:
        raise UserError(f'--device_check {path}: cannot read it ({e.strerror}).') from e
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(
            f'--device_check {path}: not a {DEVICE_CHECK_TOOL} result ({type(e).__name__}: {e}).'
        ) from e
    if not rates:
        raise UserError(f'--device_check {path}: the file holds no measured fused update rate.')
    quick = ' --quick (reduced sizes)' if payload.get('quick') else ''
    where = f'{device.get("kind") or device.get("platform")} ({device.get("platform")})'
    return RateTable(
        source=f'measured by {DEVICE_CHECK_TOOL}{quick} on {where}, '
        f'{payload.get("date", "undated")} ({path})',
        rates=rates,
        measured_on_gpu=device.get('platform') == 'gpu',
    )


# ---------------------------------------------------------------------------------- one job


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a job's update time depends on."""

    agent: str
    num_candidates: int | None
    hidden: tuple[int, ...]
    value_hidden: tuple[int, ...]
    batch_size: int
    seeds: int

    def describe(self) -> str:
        """``DROL K=16, hidden 4x512, batch 256, 8 seeds``."""
        name = self.agent.upper() + (f' K={self.num_candidates}' if self.num_candidates else '')
        widths = set(self.hidden)
        hidden = f'{len(self.hidden)}x{self.hidden[0]}' if len(widths) == 1 else str(self.hidden)
        return f'{name}, hidden {hidden}, batch {self.batch_size}, {self.seeds} seeds'


def setting_of(job: Job) -> Setting:
    """The job's agent, K, sizes and seeds, from its resolved agent settings."""
    config = job.agent_config
    candidates = config.get('num_candidates')
    agent = 'drol' if candidates is not None else job.agent_name
    return Setting(
        agent=agent,
        num_candidates=int(candidates) if candidates is not None else None,
        hidden=tuple(config.get('actor_hidden_dims', PAPER_SIZES[0])),
        value_hidden=tuple(config.get('value_hidden_dims', PAPER_SIZES[0])),
        batch_size=int(config.get('batch_size', PAPER_SIZES[1])),
        seeds=len(job.seeds),
    )


def size_factor(hidden: Sequence[int], value_hidden: Sequence[int], batch_size: int) -> float:
    """A proxy for an update's matrix work: the batch times the weights of both networks."""

    def weights(dims: Sequence[int]) -> int:
        widths = [NOMINAL_IO_WIDTH, *dims, NOMINAL_IO_WIDTH]
        return sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))

    return batch_size * (weights(hidden) + weights(value_hidden))


def interpolate(points: Mapping[int, float], x: int, above: str) -> tuple[float, str]:
    """The value at ``x`` from measured ``points`` (see the module docstring), and how it came.

    ``above`` is 'linear' (extend the last segment) or 'proportional' (grow with ``x``).
    """
    xs = sorted(points)
    if x in points:
        return points[x], 'measured'
    if x < xs[0]:
        return points[xs[0]], f'taken at {xs[0]}'
    if x > xs[-1]:
        if above == 'linear' and len(xs) > 1:
            slope = (points[xs[-1]] - points[xs[-2]]) / (xs[-1] - xs[-2])
            return points[xs[-1]] + slope * (x - xs[-1]), f'extrapolated from {xs[-2]}, {xs[-1]}'
        return points[xs[-1]] * x / xs[-1], f'scaled from {xs[-1]}'
    high = next(v for v in xs if v > x)
    low = max(v for v in xs if v < x)
    share = (x - low) / (high - low)
    return points[low] + share * (points[high] - points[low]), f'interpolated {low}-{high}'


@dataclasses.dataclass(frozen=True)
class JobCost:
    """A job's estimated seconds (training, plus compilation where measured) and their origin."""

    job: Job
    setting: Setting
    seconds: float
    seed_updates_per_second: float
    derived: tuple[str, ...]  # How the rate was derived where it was not measured as such.
    startup_s: float = 0.0  # Part of ``seconds``: the start-up measured with the rate.


def _one_job_seconds(rates: Sequence[Rate], setting: Setting) -> tuple[float, list[str], Rate]:
    """Seconds of one update at ``setting`` from one-job-per-device ``rates``, and how derived.

    Also returns the measured rate nearest to the setting (whose compilation time it shares).
    """
    derived, agent = [], setting.agent
    if not any(r.agent == agent for r in rates):
        derived.append(f'{agent} not measured: at FQL rates')
        agent = 'fql'
    rates = [r for r in rates if r.agent == agent]
    if not rates:
        raise UserError(f'the rates hold no {agent.upper()} measurement to estimate from.')
    wanted = size_factor(setting.hidden, setting.value_hidden, setting.batch_size)
    sizes = {(r.hidden, r.batch_size) for r in rates}
    nearest = (setting.hidden, setting.batch_size)
    scale = 1.0
    if nearest not in sizes or setting.hidden != setting.value_hidden:
        nearest = min(sizes, key=lambda s: abs(size_factor(s[0], s[0], s[1]) / wanted - 1))
        scale = wanted / size_factor(nearest[0], nearest[0], nearest[1])
        derived.append(
            f'sizes not measured: {scale:,.3g}x the work of the measured hidden {nearest[0]}, '
            f'batch {nearest[1]} (a rough guess)'
        )
    rates = [r for r in rates if (r.hidden, r.batch_size) == nearest]
    by_k: dict[int, dict[int, float]] = {}
    for rate in rates:
        by_k.setdefault(rate.num_candidates or 0, {})[rate.seeds] = rate.seconds_per_update
    per_k = {}
    for k, by_seeds in by_k.items():
        per_k[k], how = interpolate(by_seeds, setting.seeds, 'proportional')
        if how != 'measured':
            derived.append(f'seeds {how}')
    if agent == 'drol':
        seconds, how = interpolate(per_k, setting.num_candidates or 0, 'linear')
    else:
        seconds, how = per_k[0], 'measured'
    if how != 'measured':
        derived.append(f'K {how}')
    closest = min(
        rates,
        key=lambda r: (abs((r.num_candidates or 0) - (setting.num_candidates or 0)), r.seeds),
    )
    return seconds * scale, derived, closest


def _sharing_factor(table: RateTable, rate: Rate, jobs_per_gpu: int) -> tuple[float, list[str]]:
    """How much longer an update takes with ``jobs_per_gpu`` jobs per GPU than alone.

    Measured for the same agent, K, sizes and seeds where possible; else the mean of the
    settings that were measured both ways.
    """

    def key(r: Rate) -> tuple:
        return (r.agent, r.num_candidates, r.hidden, r.batch_size, r.seeds)

    alone = {key(r): r.seconds_per_update for r in table.rates if r.jobs_per_gpu == 1}
    shared = {key(r): r.seconds_per_update for r in table.rates if r.jobs_per_gpu == jobs_per_gpu}
    factors = {k: shared[k] / alone[k] for k in shared if k in alone}
    if not factors:
        measured = ', '.join(map(str, table.jobs_per_gpu_measured))
        raise UserError(
            f'--jobs_per_gpu {jobs_per_gpu} was not measured ({table.source}; jobs per GPU '
            f'measured: {measured}); pass one of those, or --updates_per_second.'
        )
    same = [f for k, f in factors.items() if k[:4] == key(rate)[:4]]
    if same:
        return same[0], []
    mean = sum(factors.values()) / len(factors)
    return mean, [f'{jobs_per_gpu} jobs per GPU: slowdown of other measured settings']


def job_cost(table: RateTable, job: Job, jobs_per_gpu: int = 1) -> JobCost:
    """The job's time at its own settings from ``table`` (``UserError``: nothing to go on).

    ``jobs_per_gpu``: how many jobs share the job's GPU.
    """
    setting = setting_of(job)
    updates = job.total_steps
    if table.flat_seed_updates_per_second is not None:
        rate = table.flat_seed_updates_per_second
        return JobCost(job, setting, updates * setting.seeds / rate, rate, ())
    alone = [r for r in table.rates if r.jobs_per_gpu == 1]
    seconds, derived, closest = _one_job_seconds(alone, setting)
    if jobs_per_gpu > 1:
        factor, how = _sharing_factor(table, closest, jobs_per_gpu)
        seconds, derived = seconds * factor, derived + how
    startup = closest.startup_s or 0.0
    return JobCost(
        job,
        setting,
        updates * seconds + startup,
        setting.seeds / seconds,
        tuple(dict.fromkeys(derived)),
        startup,
    )


# ----------------------------------------------------------------------------- the sweep


def makespan(durations: Sequence[float], slots: int) -> float:
    """Wall-clock of running ``durations`` in order, each on the first of ``slots`` to free up."""
    free = [0.0] * max(1, slots)
    for duration in durations:
        heapq.heappush(free, heapq.heappop(free) + duration)
    return max(free)


def format_duration(seconds: float) -> str:
    """``5,216 h``, ``7.9 h``, ``14 min`` or ``50 s``."""
    hours = seconds / 3600
    if hours >= 10:
        return f'{hours:,.0f} h'
    if hours >= 1:
        return f'{hours:.1f} h'
    if seconds >= 60:
        return f'{seconds / 60:.0f} min'
    return f'{seconds:.0f} s'


def _hours(seconds: float) -> str:
    hours = seconds / 3600
    return f'{hours:,.0f}' if hours >= 10 else f'{hours:.2g}'


def describe_cost(table: RateTable, jobs: list[Job]) -> list[str]:
    """Lines of the dry run: every job's time (one job per device) by setting, and the source."""
    costs = [job_cost(table, job) for job in jobs]
    total = sum(c.seconds for c in costs)
    counted = sum(bool(c.startup_s) for c in costs)
    startup = {0: '', len(costs): ' and start-up'}.get(counted, ' (start-up where measured)')
    shown = f' ({format_duration(total)})' if total < 3600 else ''
    lines = [
        f'estimate: {_hours(total)} device-hours{shown} of training{startup} '
        '(evaluation not counted), each job at its own settings:'
    ]
    groups: dict[Setting, list[JobCost]] = {}
    for cost in costs:
        groups.setdefault(cost.setting, []).append(cost)
    for setting, group in groups.items():
        derived = f' ({"; ".join(group[0].derived)})' if group[0].derived else ''
        lines.append(
            f'  {setting.describe()}: {len(group)} job{"s" if len(group) > 1 else ""} at '
            f'{group[0].seed_updates_per_second:,.1f} seed-updates/s per job{derived}, '
            f'{format_duration(sum(c.seconds for c in group))}'
        )
    lines.append(f'  rates: {table.source}')
    return lines


def describe_plan(
    table: RateTable, jobs: list[Job], gpus: int, jobs_per_gpu: int, packed: bool
) -> list[str]:
    """The wall-clock of the whole sweep on one node with ``gpus`` GPUs, or what it needs.

    Jobs take the node's ``gpus x jobs_per_gpu`` places as they free up (the local launcher);
    with ``packed`` (SLURM) every ``jobs_per_gpu`` jobs share one array task and its GPU until
    the slowest of them ends.
    """
    head = f'plan: {gpus} GPU(s) x {jobs_per_gpu} job(s) per GPU'
    if table is CPU_RATES:
        return [
            f'{head}: needs update rates measured on that GPU: run python {DEVICE_CHECK_TOOL} on '
            'the node and pass --device_check FILE (or --updates_per_second)'
        ]
    costs = [job_cost(table, job, jobs_per_gpu) for job in jobs]
    if packed:
        tasks = [costs[i : i + jobs_per_gpu] for i in range(0, len(costs), jobs_per_gpu)]
        wall = makespan([max(c.seconds for c in task) for task in tasks], gpus)
        how = f'{len(tasks)} array tasks of {jobs_per_gpu} jobs, {gpus} at a time'
    else:
        wall = makespan([c.seconds for c in costs], gpus * jobs_per_gpu)
        how = f'{gpus * jobs_per_gpu} jobs at a time, taken as places free up'
    busy = sum(c.seconds for c in costs) / max(wall * gpus * jobs_per_gpu, 1e-9)
    return [
        f'{head} ({how}): {len(jobs)} jobs in about {format_duration(wall)} wall-clock '
        '(training and, where measured, start-up; evaluation not counted); places busy '
        f'{100 * busy:.0f}% of that time',
        f'  rates: {table.source}',
    ]
