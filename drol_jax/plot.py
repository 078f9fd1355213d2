"""Learning curves and final-score tables from evaluation logs.

Usage::

    python -m drol_jax.plot --runs 'exp/**/eval.csv' --out curves.png [--table [--by task]]

Reads our run folders (``<save_dir>/<run_group>/<env>/<agent>/seed<k>/``) and FQL's
(``exp/<project>/<run_group>/sd000_<timestamp>/``) alike: a run is any folder holding an
``eval.csv``, and its environment, agent, seed and run label come from the ``flags.json``
beside it. Lines and table columns are run labels ('DROL(16)', 'DROL*', 'FQL',
'DROL(16) num_candidates=4'); runs whose agent settings differ are never pooled.

The computations (loading, seed alignment, bootstrap confidence intervals, the aggregate
table) are pure functions; drawing and file writing live in ``draw_curves`` and ``main``.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import logging
import math
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from drol_jax.cli import ArgumentParser, reports_user_errors
from drol_jax.errors import UserError

log = logging.getLogger(__name__)

SUCCESS = 'evaluation/success'
RETURN = 'evaluation/episode.return'
CONFIDENCE = 0.95

# Display label and scale for known metrics. Success is logged as a fraction in [0, 1]
# (ours and FQL's); people read it as a percentage.
_METRIC_DISPLAY = {
    SUCCESS: ('success rate (%)', 100.0),
    RETURN: ('episode return', 1.0),
    'evaluation/normalized_return': ('normalized return', 1.0),
    'evaluation/episode.length': ('episode length (env steps)', 1.0),
}


@dataclass(frozen=True)
class Run:
    """One training run: who ran where, with which settings, plus its ``eval.csv`` columns.

    ``label`` names the setting in legends and table columns: the run's ``run_label`` (e.g.
    'DROL(16)', 'DROL(16) num_candidates=4'), else its agent name. ``settings`` is the agent
    configuration as canonical JSON ('' when unknown); runs are only pooled as seeds of one
    curve when their environment, label and settings all agree.
    """

    path: Path
    env_name: str
    agent_name: str
    seed: int
    run_group: str | None
    columns: dict[str, np.ndarray]
    label: str = ''
    settings: str = ''


@dataclass(frozen=True)
class SeedCurves:
    """One (environment, agent) group, aligned on a shared step grid.

    ``values`` has shape ``(n_seeds, n_steps)`` in display units (success in %).
    """

    steps: np.ndarray
    values: np.ndarray
    seeds: tuple[int, ...]
    interpolated: bool


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval."""

    value: float
    low: float
    high: float


def metric_display(metric: str) -> tuple[str, float]:
    """Return the axis label (with units) and the multiplier that converts logged values to it."""
    return _METRIC_DISPLAY.get(metric, (metric, 1.0))


# ----------------------------------------------------------------------------- loading


def find_eval_files(patterns: Iterable[str]) -> list[Path]:
    """Expand glob patterns into the sorted list of ``eval.csv`` files they designate.

    A pattern may match ``eval.csv`` files, run folders, or folders above run folders
    (searched recursively), so ``--runs exp/`` works as well as a precise glob.
    """
    found: set[Path] = set()
    for pattern in patterns:
        for match in glob.glob(pattern, recursive=True):
            path = Path(match)
            if path.is_file() and path.name == 'eval.csv':
                found.add(path)
            elif path.is_dir():
                found.update(path.rglob('eval.csv'))
    return sorted(found)


def read_eval_csv(path: Path) -> dict[str, np.ndarray]:
    """Read an ``eval.csv`` into float columns sorted by ``step``, one row per step.

    Empty or non-numeric cells become NaN (FQL's logger leaves a cell empty when a row lacks a
    key). When a step appears twice (a resumed run), the later row wins.
    """
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    if not rows:  # the run has started but not evaluated yet
        return {'step': np.array([])}
    if 'step' not in rows[0]:
        raise UserError(f'{path}: no header with a "step" column')
    header, body = rows[0], [row for row in rows[1:] if row]
    data = np.full((len(body), len(header)), np.nan)
    for i, row in enumerate(body):
        for j, cell in enumerate(row[: len(header)]):
            data[i, j] = _to_float(cell)
    step_column = header.index('step')
    data = data[~np.isnan(data[:, step_column])]
    # Reverse so that np.unique's first occurrence is the last row written for each step.
    reversed_steps = data[::-1, step_column]
    _, first_in_reversed = np.unique(reversed_steps, return_index=True)
    data = data[::-1][first_in_reversed]
    return {name: data[:, j] for j, name in enumerate(header)}


def _to_float(cell: str) -> float:
    """Parse a CSV cell, NaN when it is empty or not a number."""
    try:
        return float(cell)
    except ValueError:
        return np.nan


def _identity_from_path(run_dir: Path) -> tuple[str, str, int]:
    """Guess (env, agent, seed) from a run folder path, for runs without a usable flags.json."""
    name = run_dir.name
    ours = re.fullmatch(r'seed(\d+)', name)
    if ours:  # <env>/<agent>/seed<k>
        return run_dir.parent.parent.name, run_dir.parent.name, int(ours.group(1))
    fql = re.match(r'sd(\d+)_', name)
    if fql:  # <project>/<run_group>/sd<k>_<timestamp>: the env is not in the path
        return run_dir.parent.name, 'unknown-agent', int(fql.group(1))
    return run_dir.parent.name, 'unknown-agent', 0


def read_flags(run_dir: Path) -> dict:
    """The run's ``flags.json`` ({} when absent); ``UserError`` when it is not JSON."""
    flags_path = run_dir / 'flags.json'
    if not flags_path.is_file():
        return {}
    try:
        return json.loads(flags_path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f'{flags_path}: not valid JSON ({error})') from error


def load_run(eval_file: Path) -> Run:
    """Read one run: identity, label and settings from ``flags.json``, columns from ``eval.csv``.

    Any identity field ``flags.json`` lacks is inferred from the path, with a warning, because
    a wrong guess silently merges or splits groups. Runs written before run labels existed
    (and FQL's own logs) are labelled with their agent name.
    """
    run_dir = eval_file.parent
    flags = read_flags(run_dir)
    path_env, path_agent, path_seed = _identity_from_path(run_dir)

    agent = flags.get('agent')
    if isinstance(agent, dict) and 'agent_name' in agent:
        agent_name = str(agent['agent_name'])
    elif isinstance(agent, str):  # a path to an agent file
        agent_name = Path(agent).stem
    else:
        agent_name = None
    env_name = flags.get('env_name')
    seed = flags.get('seed')

    missing = [
        key
        for key, value in (('env_name', env_name), ('agent.agent_name', agent_name), ('seed', seed))
        if value is None
    ]
    if missing:
        source = 'missing' if not flags else f'without {", ".join(missing)}'
        log.warning(
            '%s: flags.json %s; inferred env=%s agent=%s seed=%s from the path',
            run_dir,
            source,
            env_name or path_env,
            agent_name or path_agent,
            path_seed if seed is None else seed,
        )
    agent_name = agent_name or path_agent
    return Run(
        path=run_dir,
        env_name=str(env_name or path_env),
        agent_name=agent_name,
        seed=int(path_seed if seed is None else seed),
        run_group=flags.get('run_group'),
        columns=read_eval_csv(eval_file),
        label=str(flags.get('run_label') or agent_name),
        settings=json.dumps(agent, sort_keys=True) if isinstance(agent, dict) else '',
    )


def _last_step(run: Run) -> float:
    steps = run.columns.get('step')
    return float(steps[-1]) if steps is not None and steps.size else -math.inf


def _differing_settings(settings: Sequence[str]) -> list[str]:
    """The agent hyperparameters whose values differ between these settings, sorted."""
    configs = [json.loads(s) for s in settings if s]
    keys = sorted({k for config in configs for k in config})
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def _separate_settings(runs: list[Run]) -> list[Run]:
    """Give runs that share an (env, label) but not their settings labels of their own.

    The added words name the hyperparameters that differ ('drol num_candidates=4'), so a K
    sweep logged without run labels still shows one line per K.
    """
    groups: dict[tuple[str, str], dict[str, list[Run]]] = {}
    for run in runs:
        groups.setdefault((run.env_name, run.label), {}).setdefault(run.settings, []).append(run)
    separated = []
    for (env_name, label), by_settings in sorted(groups.items()):
        if len(by_settings) == 1:
            separated += next(iter(by_settings.values()))
            continue
        keys = _differing_settings(list(by_settings))
        log.warning(
            'env=%s: runs labelled %r differ in %s; shown as separate lines',
            env_name,
            label,
            ', '.join(keys) or 'unrecorded settings',
        )
        for settings, members in by_settings.items():
            if settings:
                config = json.loads(settings)
                words = ' '.join(f'{k}={config.get(k)}' for k in keys)
            else:
                words = '(settings unknown)'
            separated += [replace(run, label=f'{label} {words}'.strip()) for run in members]
    return separated


def load_runs(patterns: Iterable[str]) -> list[Run]:
    """Load every run matched by ``patterns``; raise ``UserError`` when none is found.

    Runs are told apart by environment, label and agent settings, never by folder: runs that
    differ in any agent hyperparameter stay separate (see ``_separate_settings``). Two runs
    that agree on all of these and on the seed are one run logged twice (a rerun); the one that
    got furthest is kept, ties going to the later path (FQL's newest ``sd000_<timestamp>``),
    because counting a rerun as another seed would narrow the confidence interval dishonestly.
    """
    patterns = list(patterns)
    eval_files = find_eval_files(patterns)
    if not eval_files:
        raise UserError(f'no eval.csv found under --runs {" ".join(patterns)}')
    by_key: dict[tuple[str, str, str, int], Run] = {}
    for eval_file in eval_files:
        run = load_run(eval_file)
        key = (run.env_name, run.label, run.settings, run.seed)
        previous = by_key.get(key)
        if previous is not None:
            kept, dropped = (
                (run, previous)
                if _last_step(run) >= _last_step(previous)
                else (
                    previous,
                    run,
                )
            )
            log.warning(
                'duplicate run for env=%s %s seed=%d: using %s, ignoring %s',
                run.env_name,
                run.label,
                run.seed,
                kept.path,
                dropped.path,
            )
            run = kept
        by_key[key] = run
    return _separate_settings(list(by_key.values()))


# ------------------------------------------------------------------------ computations


def align_seeds(
    steps: Sequence[np.ndarray], values: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Put per-seed curves on one step grid; return (steps, values[seed, step], interpolated).

    Uses the steps common to all seeds when they reach the end of the span all seeds cover,
    which is the usual case (same eval interval, perhaps a seed that stopped early). Otherwise
    (e.g. offset evaluation steps) it linearly interpolates every seed onto the sparsest seed's
    grid within that span. Curves are cut at the shortest seed so that every point is a mean
    over the same seeds.
    """
    span_start = max(s[0] for s in steps)
    span_end = min(s[-1] for s in steps)
    common = steps[0]
    for seed_steps in steps[1:]:
        common = np.intersect1d(common, seed_steps)
    if common.size and common[-1] == span_end:
        matrix = np.stack(
            [v[np.searchsorted(s, common)] for s, v in zip(steps, values, strict=True)]
        )
        return common, matrix, False
    sparsest = min(steps, key=lambda s: np.count_nonzero((s >= span_start) & (s <= span_end)))
    grid = sparsest[(sparsest >= span_start) & (sparsest <= span_end)]
    matrix = np.stack([np.interp(grid, s, v) for s, v in zip(steps, values, strict=True)])
    return grid, matrix, True


def group_curves(runs: Sequence[Run], metric: str) -> dict[tuple[str, str], SeedCurves]:
    """Group runs by (env_name, label) and align their ``metric`` curves across seeds.

    Values are converted to display units (success in %). Runs without the metric are left
    out; groups are keyed and seeds ordered deterministically.
    """
    _, scale = metric_display(metric)
    per_group: dict[tuple[str, str], list[Run]] = {}
    for run in sorted(runs, key=lambda r: (r.env_name, r.label, r.seed)):
        column = run.columns.get(metric)
        if column is None or np.all(np.isnan(column)):
            continue
        per_group.setdefault((run.env_name, run.label), []).append(run)

    curves = {}
    interpolated_groups, truncated_groups = [], []
    for key, group in per_group.items():
        steps, values = [], []
        for run in group:
            keep = ~np.isnan(run.columns[metric])
            steps.append(run.columns['step'][keep])
            values.append(run.columns[metric][keep] * scale)
        grid, matrix, interpolated = align_seeds(steps, values)
        name = '/'.join(key)
        if grid.size == 0:
            log.warning('%s: seeds of %s share no step range; left out', metric, name)
            continue
        if interpolated:
            interpolated_groups.append(name)
        elif len({s[-1] for s in steps}) > 1:
            truncated_groups.append(f'{name} at step {int(grid[-1])}')
        curves[key] = SeedCurves(grid, matrix, tuple(r.seed for r in group), interpolated)
    # One line per metric rather than per group: a sweep can have dozens of groups.
    if interpolated_groups:
        log.warning(
            '%s: seeds were evaluated at different steps; interpolated linearly onto a shared '
            'grid for %s',
            metric,
            ', '.join(interpolated_groups),
        )
    if truncated_groups:
        log.warning(
            '%s: seeds end at different steps; curves stop at the shortest seed for %s',
            metric,
            ', '.join(truncated_groups),
        )
    return curves


def bootstrap_mean_ci(
    values: np.ndarray, reps: int = 10_000, confidence: float = CONFIDENCE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds (axis 0) with a percentile bootstrap confidence interval.

    ``values`` is ``(n_seeds,)`` or ``(n_seeds, n_steps)``; returns (mean, low, high) with the
    trailing shape. Seeds are resampled with replacement; drawing multinomial counts instead of
    indices gives the same distribution in O(reps * n_steps) memory. One seed gives a
    zero-width interval: there is nothing to resample.
    """
    values = np.asarray(values, dtype=float)
    n_seeds = values.shape[0]
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=reps)
    boot_means = counts @ values.reshape(n_seeds, -1) / n_seeds
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot_means, [tail, 1.0 - tail], axis=0)
    trailing = values.shape[1:]
    return values.mean(axis=0), low.reshape(trailing), high.reshape(trailing)


def final_scores(curves: SeedCurves, window: int = 1) -> np.ndarray:
    """Per-seed final score: the mean of the last ``window`` aligned evaluations."""
    return curves.values[:, -window:].mean(axis=1)


def score_matrices(scores: dict[tuple[str, str], np.ndarray]) -> dict[str, np.ndarray]:
    """Arrange final scores as rliable wants them: label -> ``(n_seeds, n_tasks)`` matrix.

    rliable's stratified bootstrap needs the same number of runs on every task, so a task with
    more seeds than the agent's smallest task keeps only its lowest-numbered seeds (warned).
    ``scores`` must hold seeds in ascending seed order, as ``group_curves`` yields them.
    """
    per_agent: dict[str, dict[str, np.ndarray]] = {}
    for (env_name, agent_name), per_seed in sorted(scores.items()):
        per_agent.setdefault(agent_name, {})[env_name] = per_seed
    task_sets = {agent: tuple(tasks) for agent, tasks in per_agent.items()}
    if len(set(task_sets.values())) > 1:
        log.warning(
            'columns were run on different tasks, so their aggregates are not comparable: %s',
            '; '.join(f'{agent}: {", ".join(tasks)}' for agent, tasks in task_sets.items()),
        )
    matrices = {}
    for agent, tasks in per_agent.items():
        n_runs = min(len(s) for s in tasks.values())
        if any(len(s) != n_runs for s in tasks.values()):
            log.warning(
                '%s has unequal seed counts across tasks; aggregates use %d seeds per task',
                agent,
                n_runs,
            )
        matrices[agent] = np.stack([s[:n_runs] for s in tasks.values()], axis=1)
    return matrices


def aggregate_estimates(
    matrices: dict[str, np.ndarray], reps: int = 10_000, seed: int = 0
) -> dict[str, dict[str, Estimate]]:
    """IQM and mean across tasks per agent, with rliable's stratified-bootstrap 95% CIs.

    Returns ``{agent: {'IQM': Estimate, 'mean': Estimate}}``.
    """
    try:
        from rliable import library as rly
        from rliable import metrics
    except (ImportError, TypeError) as error:
        # rliable 1.2.0 imports `arch`, which breaks under pandas 3 / arch 8 with a TypeError.
        raise UserError(
            f'--table needs rliable ({error}); install it with: '
            "pip install 'rliable==1.2.0' 'arch>=7,<8' 'pandas<3'"
        ) from error

    def iqm_and_mean(scores: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores)])

    with warnings.catch_warnings():
        # rliable 1.2.0 can only seed `arch` through its deprecated `random_state` argument.
        warnings.filterwarnings('ignore', 'random_state is deprecated', FutureWarning)
        points, intervals = rly.get_interval_estimates(
            matrices,
            iqm_and_mean,
            reps=reps,
            confidence_interval_size=CONFIDENCE,
            random_state=np.random.RandomState(seed),
        )
    return {
        agent: {
            name: Estimate(float(points[agent][i]), *map(float, intervals[agent][:, i]))
            for i, name in enumerate(('IQM', 'mean'))
        }
        for agent in matrices
    }


# ------------------------------------------------------------------------------- table

# Benchmarks in the order the table shows them; other names follow alphabetically.
_BENCHMARKS = {'ogbench': 'OGBench', 'd4rl': 'D4RL', 'toy': 'toy tasks', 'other': 'other tasks'}
TABLE_FIELDS = (
    'metric',
    'benchmark',
    'row',
    'label',
    'statistic',
    'n_tasks',
    'n_seeds',
    'value',
    'std',
    'ci_low',
    'ci_high',
)
ROW_STATISTIC = 'mean over tasks and seeds'


def natural_key(text: str) -> list:
    """Sort key that orders numbers by value: 'K=2' before 'K=16'."""
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', text)]


def task_group(env_name: str) -> tuple[str, str]:
    """(benchmark, task family) of an environment name, from the environment registry.

    ``cube-single-play-singletask-task3-v0`` -> ('ogbench', 'cube-single-play'): every task of
    one OGBench dataset shares a family; a D4RL task is its own family (``antmaze-large-play``).
    A name the registry does not know is its own family under 'other'.
    """
    from drol_jax.envs import registry

    try:
        resolved = registry.resolve(env_name)
    except UserError:
        return 'other', env_name
    return resolved.family.name, resolved.task_family


@dataclass(frozen=True)
class TableCell:
    """One table cell: a label's mean over a row's tasks and seeds, and the spread over seeds.

    ``std`` is the sample standard deviation over seeds of the per-seed mean over the row's
    tasks (0 for one seed).
    """

    benchmark: str
    row: str
    label: str
    n_tasks: int
    n_seeds: int
    mean: float
    std: float


def table_cells(scores: dict[tuple[str, str], dict[int, float]], by: str) -> list[TableCell]:
    """Group per-seed final scores ``{(env, label): {seed: score}}`` into table cells.

    ``by='family'`` makes one row per task family (an OGBench family pools its 5 tasks),
    ``by='task'`` one row per environment. A cell uses the seeds all of its tasks have.
    """
    groups: dict[tuple[str, str, str], dict[str, dict[int, float]]] = {}
    for (env_name, label), per_seed in sorted(scores.items()):
        benchmark, family = task_group(env_name)
        row = family if by == 'family' else env_name
        groups.setdefault((benchmark, row, label), {})[env_name] = per_seed
    cells = []
    for (benchmark, row, label), tasks in groups.items():
        common = sorted(set.intersection(*(set(per_seed) for per_seed in tasks.values())))
        if not common:
            log.warning('%s / %s: its tasks share no seed; left out of the table', row, label)
            continue
        if any(len(per_seed) != len(common) for per_seed in tasks.values()):
            log.warning(
                '%s / %s: tasks have different seeds; the cell uses seeds %s',
                row,
                label,
                ', '.join(map(str, common)),
            )
        per_seed = np.array([np.mean([s[seed] for s in tasks.values()]) for seed in common])
        std = float(per_seed.std(ddof=1)) if per_seed.size > 1 else 0.0
        cells.append(
            TableCell(benchmark, row, label, len(tasks), len(common), float(per_seed.mean()), std)
        )
    return cells


def benchmark_order(name: str) -> tuple[int, str]:
    """Sort key of benchmarks: OGBench, D4RL, toy, then the rest."""
    order = list(_BENCHMARKS)
    return (order.index(name) if name in order else len(order), name)


def table_rows(
    scores: dict[tuple[str, str], dict[int, float]], by: str, reps: int, seed: int
) -> list[dict[str, object]]:
    """The table as flat rows: one per (row, label) cell, then IQM and mean per benchmark.

    Aggregates pool all tasks of a benchmark (not its families), per label, with rliable's
    stratified-bootstrap 95% CIs.
    """
    rows: list[dict[str, object]] = []
    for cell in table_cells(scores, by):
        rows.append(
            dict(
                benchmark=cell.benchmark,
                row=cell.row,
                label=cell.label,
                statistic=ROW_STATISTIC,
                n_tasks=cell.n_tasks,
                n_seeds=cell.n_seeds,
                value=cell.mean,
                std=cell.std,
                ci_low='',
                ci_high='',
            )
        )
    benchmarks: dict[str, dict[tuple[str, str], np.ndarray]] = {}
    for (env_name, label), per_seed in scores.items():
        ordered = np.array([per_seed[s] for s in sorted(per_seed)])
        benchmarks.setdefault(task_group(env_name)[0], {})[env_name, label] = ordered
    for benchmark in sorted(benchmarks, key=benchmark_order):
        matrices = score_matrices(benchmarks[benchmark])
        for label, stats in aggregate_estimates(matrices, reps=reps, seed=seed).items():
            n_seeds, n_tasks = matrices[label].shape
            for statistic, est in stats.items():
                rows.append(
                    dict(
                        benchmark=benchmark,
                        row='all tasks',
                        label=label,
                        statistic=statistic,
                        n_tasks=n_tasks,
                        n_seeds=n_seeds,
                        value=est.value,
                        std='',
                        ci_low=est.low,
                        ci_high=est.high,
                    )
                )
    return rows


def _table_layout(rows: Sequence[dict[str, object]]):
    """Columns and lines shared by the Markdown and LaTeX renderings.

    Returns (labels, lines); a line is ('section', benchmark display name) or
    ('cells', row title, {label: cell text}).
    """
    labels = sorted({str(r['label']) for r in rows}, key=natural_key)
    benchmarks = sorted({str(r['benchmark']) for r in rows}, key=benchmark_order)
    lines: list[tuple] = []
    for benchmark in benchmarks:
        if len(benchmarks) > 1:
            lines.append(('section', _BENCHMARKS.get(benchmark, benchmark)))
        mine = [r for r in rows if r['benchmark'] == benchmark]
        cells = [r for r in mine if r['statistic'] == ROW_STATISTIC]
        for row_name in sorted({str(r['row']) for r in cells}):
            in_row = {str(r['label']): r for r in cells if r['row'] == row_name}
            most = max(int(r['n_tasks']) for r in in_row.values())
            title = f'{row_name} ({most} tasks)' if most > 1 else row_name
            texts = {}
            for label, r in in_row.items():
                text = f'{r["value"]:.1f} ± {r["std"]:.1f}'
                if int(r['n_tasks']) < most:
                    text += f' ({r["n_tasks"]}/{most} tasks)'
                texts[label] = text
            lines.append(('cells', title, texts))
        for statistic in ('IQM', 'mean'):
            in_row = {str(r['label']): r for r in mine if r['statistic'] == statistic}
            if not in_row:
                continue
            n_tasks = max(int(r['n_tasks']) for r in in_row.values())
            texts = {
                label: f'{r["value"]:.1f} [{r["ci_low"]:.1f}, {r["ci_high"]:.1f}]'
                for label, r in in_row.items()
            }
            tasks = f'{n_tasks} task' + ('s' if n_tasks > 1 else '')
            lines.append(('cells', f'{statistic} over {tasks}', texts))
    return labels, lines


def format_markdown(rows: Sequence[dict[str, object]], heading: str, by: str) -> str:
    """The table as Markdown: one line per row (family or task) and aggregate, labels as columns."""
    labels, lines = _table_layout(rows)
    first = 'task family' if by == 'family' else 'task'
    out = [heading, '', f'| {first} | ' + ' | '.join(labels) + ' |', '|---' * (len(labels) + 1)]
    out[-1] += '|'
    for line in lines:
        if line[0] == 'section':
            out.append(f'| *{line[1]}* |' + ' |' * len(labels))
        else:
            _, title, texts = line
            bold = title.startswith(('IQM ', 'mean '))
            title = f'**{title}**' if bold else title
            out.append(f'| {title} | ' + ' | '.join(texts.get(name, '-') for name in labels) + ' |')
    return '\n'.join(out) + '\n'


_LATEX_SPECIAL = {c: f'\\{c}' for c in '&%$#_{}'} | {'~': r'\textasciitilde{}', '^': r'\^{}'}


def _latex(text: str) -> str:
    """Escape LaTeX's special characters; '±' and brackets become math."""
    escaped = ''.join(_LATEX_SPECIAL.get(c, c) for c in text.replace('\\', r'\textbackslash{}'))
    return escaped.replace(' ± ', r' $\pm$ ')


def format_latex(rows: Sequence[dict[str, object]], heading: str, by: str) -> str:
    r"""The same table as a booktabs ``tabular`` (needs ``\usepackage{booktabs}``)."""
    labels, lines = _table_layout(rows)
    first = 'Task family' if by == 'family' else 'Task'
    out = [
        f'% {heading}',
        r'\begin{tabular}{l' + 'c' * len(labels) + '}',
        r'\toprule',
        ' & '.join([first, *map(_latex, labels)]) + r' \\',
        r'\midrule',
    ]
    for line in lines:
        if line[0] == 'section':
            out.append(
                rf'\multicolumn{{{len(labels) + 1}}}{{l}}{{\textit{{{_latex(line[1])}}}}} \\'
            )
        else:
            _, title, texts = line
            if title.startswith('IQM '):
                out.append(r'\midrule')
            cells = [_latex(texts.get(label, '-')) for label in labels]
            out.append(' & '.join([_latex(title), *cells]) + r' \\')
    out += [r'\bottomrule', r'\end{tabular}']
    return '\n'.join(out) + '\n'


# ---------------------------------------------------------------------------- drawing


def _format_steps(value: float, _position: int) -> str:
    """Tick label for gradient steps: 250k, 1M, 1.5M."""
    if abs(value) >= 1e6:
        return f'{value / 1e6:g}M'
    if abs(value) >= 1e3:
        return f'{value / 1e3:g}k'
    return f'{value:g}'


def draw_curves(
    curves_by_metric: dict[str, dict[tuple[str, str], SeedCurves]],
    reps: int = 10_000,
    seed: int = 0,
    title: str | None = None,
):
    """Draw one subplot per (metric, environment), one line per agent with its 95% CI band.

    Returns a matplotlib ``Figure`` (not attached to pyplot, so no display backend is needed).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    envs = sorted({env for curves in curves_by_metric.values() for env, _ in curves})
    agents = sorted(
        {label for curves in curves_by_metric.values() for _, label in curves}, key=natural_key
    )
    colors = {agent: f'C{i % 10}' for i, agent in enumerate(agents)}
    n_cols = min(len(envs), 4)
    rows_per_metric = math.ceil(len(envs) / n_cols)
    n_rows = rows_per_metric * len(curves_by_metric)

    # At least 7 inches wide so that the title and legend fit above a single subplot.
    fig = Figure(figsize=(max(4.4 * n_cols, 7.0), 3.4 * n_rows + 0.9), layout='constrained')
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    legend_handles = {}
    for m, (metric, curves) in enumerate(curves_by_metric.items()):
        label, _ = metric_display(metric)
        for e, env in enumerate(envs):
            ax = axes[m * rows_per_metric + e // n_cols, e % n_cols]
            ax.set_title(env, fontsize=11)
            ax.set_xlabel('gradient steps')
            ax.set_ylabel(label)
            ax.xaxis.set_major_formatter(FuncFormatter(_format_steps))
            ax.grid(alpha=0.3)
            if metric == SUCCESS:
                ax.set_ylim(-2, 102)
            plotted = False
            for agent in agents:
                group = curves.get((env, agent))
                if group is None:
                    continue
                mean, low, high = bootstrap_mean_ci(group.values, reps=reps, seed=seed)
                (line,) = ax.plot(group.steps, mean, color=colors[agent], lw=1.8)
                ax.fill_between(group.steps, low, high, color=colors[agent], alpha=0.2, lw=0)
                legend_handles[agent] = line
                plotted = True
            if not plotted:
                ax.set_xticks([])
                ax.set_yticks([])
                ax.text(
                    0.5,
                    0.5,
                    f'no {metric} logged',
                    ha='center',
                    va='center',
                    color='0.4',
                    transform=ax.transAxes,
                )
        for e in range(len(envs), rows_per_metric * n_cols):
            axes[m * rows_per_metric + e // n_cols, e % n_cols].set_visible(False)

    names = [_legend_label(a, curves_by_metric) for a in agents if a in legend_handles]
    # As many columns as fit the figure's width (a legend entry takes about 0.09 in per
    # character plus the line sample), so that long run labels wrap into rows.
    fitting = int(fig.get_figwidth() / (0.09 * (max(map(len, names)) + 6)))
    fig.legend(
        [legend_handles[a] for a in agents if a in legend_handles],
        names,
        loc='outside lower center',
        ncols=max(1, min(len(names), 5, fitting)),
        frameon=False,
    )
    fig.suptitle(
        title or 'Evaluation during training (mean over seeds, shaded: 95% bootstrap CI)',
        fontsize=12,
    )
    return fig


def _legend_label(agent: str, curves_by_metric: dict[str, dict[tuple[str, str], SeedCurves]]):
    """Agent name, its seed count(s), and a note when any of its curves was interpolated."""
    groups = [
        g for curves in curves_by_metric.values() for (_, a), g in curves.items() if a == agent
    ]
    counts = sorted({len(g.seeds) for g in groups})
    seeds = f'{counts[0]}' if len(counts) == 1 else f'{counts[0]}-{counts[-1]}'
    note = ', interpolated' if any(g.interpolated for g in groups) else ''
    return f'{agent} ({seeds} seed{"s" if counts[-1] > 1 else ""}{note})'


# -------------------------------------------------------------------------------- CLI


def _available_metrics(runs: Sequence[Run]) -> set[str]:
    """Metric columns with at least one value in some run."""
    return {
        name
        for run in runs
        for name, column in run.columns.items()
        if name != 'step' and not np.all(np.isnan(column))
    }


def choose_metrics(runs: Sequence[Run], requested: str | None) -> tuple[list[str], str]:
    """Return (metrics to draw, metric for the table).

    By default draw success and return (whichever were logged) and tabulate success, falling
    back to return when no run logged success (e.g. D4RL locomotion).
    """
    available = _available_metrics(runs)
    if requested is not None:
        if requested not in available:
            raise UserError(
                f'no run logged --metric {requested}; available: {", ".join(sorted(available))}'
            )
        return [requested], requested
    drawn = [m for m in (SUCCESS, RETURN) if m in available]
    if not drawn:
        raise UserError(
            f'runs log neither {SUCCESS} nor {RETURN}; pick one of --metric '
            f'{", ".join(sorted(available))}'
        )
    return drawn, drawn[0]


def _write_table(curves, metric, out: Path, window: int, reps: int, seed: int, by: str) -> str:
    """Compute the final-score table, write ``<out stem>_table.{csv,md,tex}``, return Markdown."""
    scores = {
        key: dict(zip(group.seeds, map(float, final_scores(group, window)), strict=True))
        for key, group in curves.items()
    }
    rows = table_rows(scores, by, reps, seed)
    unit, _ = metric_display(metric)
    rows_are = 'task family (mean over its tasks)' if by == 'family' else 'task'
    heading = (
        f'Final {metric} in {unit}, last {window} evaluation(s). One row per {rows_are}: mean '
        f'over seeds ± standard deviation over seeds; IQM and mean over all tasks of a '
        f'benchmark [stratified-bootstrap 95% CI, rliable]. Columns: run labels.'
    )
    stem = out.with_suffix('')
    with open(f'{stem}_table.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_FIELDS)
        writer.writeheader()
        writer.writerows({'metric': metric, **row} for row in rows)
    markdown = format_markdown(rows, heading, by)
    Path(f'{stem}_table.md').write_text(markdown)
    Path(f'{stem}_table.tex').write_text(format_latex(rows, heading, by))
    return markdown


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse command-line flags."""
    parser = ArgumentParser(
        prog='python -m drol_jax.plot',
        description='Plot learning curves (mean over seeds, 95% bootstrap CI) and tabulate '
        "final scores from eval.csv logs (ours or FQL's).",
    )
    parser.add_argument(
        '--runs',
        nargs='+',
        required=True,
        metavar='GLOB',
        help='glob(s) matching run folders, eval.csv files, or folders above them; quote them '
        "(e.g. 'exp/**/seed*'); ** is recursive",
    )
    parser.add_argument(
        '--out', default='curves.png', help='figure path, format from suffix (default curves.png)'
    )
    parser.add_argument(
        '--metric',
        help=f'eval.csv column to plot and tabulate (default: draw {SUCCESS} and {RETURN}, '
        f'tabulate {SUCCESS}, or {RETURN} when no run logged success)',
    )
    parser.add_argument(
        '--table',
        action='store_true',
        help='print the final-score table (rows: task families, or tasks with --by task; '
        'columns: run labels; IQM and mean per benchmark) and write <out stem>_table.csv, '
        '.md and .tex',
    )
    parser.add_argument(
        '--by',
        choices=('family', 'task'),
        default='family',
        help='table rows: task families (an OGBench family pools its 5 tasks; default) or tasks',
    )
    parser.add_argument(
        '--final-window',
        type=int,
        default=1,
        metavar='N',
        help='final score = mean of the last N aligned evaluations (default 1)',
    )
    parser.add_argument(
        '--reps', type=int, default=10_000, metavar='N', help='bootstrap resamples (default 10000)'
    )
    parser.add_argument(
        '--seed', type=int, default=0, help='random seed of the bootstraps (default 0)'
    )
    parser.add_argument('--title', help='figure title')
    args = parser.parse_args(argv)
    if args.final_window < 1 or args.reps < 1:
        parser.error('--final-window and --reps must be positive')
    return args


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Run the plotting command; return the process exit status."""
    args = parse_args(argv)
    # Our progress messages at INFO; other libraries' (rliable logs each agent) only at WARNING.
    logging.basicConfig(format='%(levelname)s: %(message)s', level=logging.WARNING)
    log.setLevel(logging.INFO)
    runs = load_runs(args.runs)
    drawn, table_metric = choose_metrics(runs, args.metric)
    curves_by_metric = {metric: group_curves(runs, metric) for metric in drawn}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure = draw_curves(curves_by_metric, reps=args.reps, seed=args.seed, title=args.title)
    figure.savefig(out, dpi=150)
    n_groups = len({key for curves in curves_by_metric.values() for key in curves})
    log.info('wrote %s (%d runs, %d env/label groups)', out, len(runs), n_groups)
    if args.table:
        table_curves = curves_by_metric[table_metric]
        skipped = sorted({r.env_name for r in runs} - {env for env, _ in table_curves})
        if skipped:
            log.warning(
                'table leaves out %s: no %s logged (choose another with --metric)',
                ', '.join(skipped),
                table_metric,
            )
        print(
            _write_table(
                table_curves,
                table_metric,
                out,
                args.final_window,
                args.reps,
                args.seed,
                args.by,
            )
        )
    return 0


if __name__ == '__main__':
    sys.exit(main())
