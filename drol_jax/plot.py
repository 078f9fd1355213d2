"""Learning curves and final-score tables from evaluation logs.

Usage::

    python -m drol_jax.plot --runs 'exp/**/eval.csv' --out curves.png [--table]

Reads our run folders (``<save_dir>/<run_group>/<env>/<agent>/seed<k>/``) and FQL's
(``exp/<project>/<run_group>/sd000_<timestamp>/``) alike: a run is any folder holding an
``eval.csv``, and its environment, agent and seed come from the ``flags.json`` beside it.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    """One training run: who ran where, plus every numeric column of its ``eval.csv``."""

    path: Path
    env_name: str
    agent_name: str
    seed: int
    run_group: str | None
    columns: dict[str, np.ndarray]


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


def read_run_identity(run_dir: Path) -> tuple[str, str, int, str | None]:
    """Return (env_name, agent_name, seed, run_group) for a run folder.

    Prefers ``flags.json``; any field it lacks is inferred from the path, with a warning,
    because a wrong guess silently merges or splits groups.
    """
    flags_path = run_dir / 'flags.json'
    flags = {}
    if flags_path.is_file():
        try:
            flags = json.loads(flags_path.read_text())
        except json.JSONDecodeError as error:
            raise UserError(f'{flags_path}: not valid JSON ({error})') from error
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
        source = 'missing' if not flags_path.is_file() else f'without {", ".join(missing)}'
        log.warning(
            '%s: flags.json %s; inferred env=%s agent=%s seed=%s from the path',
            run_dir,
            source,
            env_name or path_env,
            agent_name or path_agent,
            path_seed if seed is None else seed,
        )
    return (
        str(env_name or path_env),
        agent_name or path_agent,
        int(path_seed if seed is None else seed),
        flags.get('run_group'),
    )


def load_runs(patterns: Iterable[str]) -> list[Run]:
    """Load every run matched by ``patterns``; raise ``UserError`` when none is found.

    Two runs with the same (env, agent, seed) are deduplicated, keeping the later path (for
    FQL's ``sd000_<timestamp>`` folders, the newest), because counting a rerun as an extra
    seed would narrow the confidence interval dishonestly. Also warns when one (env, agent)
    pools runs from several ``run_group`` flags (e.g. an ablation sharing the agent name).
    """
    patterns = list(patterns)
    eval_files = find_eval_files(patterns)
    if not eval_files:
        raise UserError(f'no eval.csv found under --runs {" ".join(patterns)}')
    by_key: dict[tuple[str, str, int], Run] = {}
    for eval_file in eval_files:
        run_dir = eval_file.parent
        env_name, agent_name, seed, run_group = read_run_identity(run_dir)
        run = Run(run_dir, env_name, agent_name, seed, run_group, read_eval_csv(eval_file))
        key = (env_name, agent_name, seed)
        if key in by_key:
            log.warning(
                'duplicate run for env=%s agent=%s seed=%d: using %s, ignoring %s',
                *key,
                run.path,
                by_key[key].path,
            )
        by_key[key] = run
    run_groups: dict[tuple[str, str], set[str]] = {}
    for run in by_key.values():
        if run.run_group is not None:
            run_groups.setdefault((run.env_name, run.agent_name), set()).add(run.run_group)
    for (env_name, agent_name), names in sorted(run_groups.items()):
        if len(names) > 1:
            log.warning(
                'env=%s agent=%s merges runs from run groups %s; narrow --runs to compare them',
                env_name,
                agent_name,
                ', '.join(sorted(names)),
            )
    return list(by_key.values())


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
    """Group runs by (env_name, agent_name) and align their ``metric`` curves across seeds.

    Values are converted to display units (success in %). Runs without the metric are left
    out; groups are keyed and seeds ordered deterministically.
    """
    _, scale = metric_display(metric)
    per_group: dict[tuple[str, str], list[Run]] = {}
    for run in sorted(runs, key=lambda r: (r.env_name, r.agent_name, r.seed)):
        column = run.columns.get(metric)
        if column is None or np.all(np.isnan(column)):
            continue
        per_group.setdefault((run.env_name, run.agent_name), []).append(run)

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


def task_estimates(
    scores: dict[tuple[str, str], np.ndarray], reps: int = 10_000, seed: int = 0
) -> dict[tuple[str, str], Estimate]:
    """Mean final score over seeds per (env, agent), with a bootstrap CI over seeds."""
    estimates = {}
    for key, per_seed in scores.items():
        mean, low, high = bootstrap_mean_ci(per_seed, reps=reps, seed=seed)
        estimates[key] = Estimate(float(mean), float(low), float(high))
    return estimates


def score_matrices(scores: dict[tuple[str, str], np.ndarray]) -> dict[str, np.ndarray]:
    """Arrange final scores as rliable wants them: agent -> ``(n_seeds, n_tasks)`` matrix.

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
            'agents were run on different tasks, so their aggregates are not comparable: %s',
            '; '.join(f'{agent}: {", ".join(tasks)}' for agent, tasks in task_sets.items()),
        )
    matrices = {}
    for agent, tasks in per_agent.items():
        n_runs = min(len(s) for s in tasks.values())
        if any(len(s) != n_runs for s in tasks.values()):
            log.warning(
                'agent=%s has unequal seed counts across tasks; aggregates use %d seeds per task',
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


def table_rows(
    tasks: dict[tuple[str, str], Estimate],
    seed_counts: dict[tuple[str, str], int],
    aggregates: dict[str, dict[str, Estimate]],
    matrices: dict[str, np.ndarray],
) -> list[dict[str, object]]:
    """Flatten task and aggregate estimates into CSV rows (one per agent and task/statistic)."""
    rows: list[dict[str, object]] = []
    for (env_name, agent_name), est in sorted(tasks.items()):
        rows.append(
            dict(
                agent=agent_name,
                task=env_name,
                statistic='mean over seeds',
                n_seeds=seed_counts[env_name, agent_name],
                n_tasks=1,
                value=est.value,
                ci_low=est.low,
                ci_high=est.high,
            )
        )
    for agent_name, stats in sorted(aggregates.items()):
        n_seeds, n_tasks = matrices[agent_name].shape
        for statistic, est in stats.items():
            rows.append(
                dict(
                    agent=agent_name,
                    task='all tasks',
                    statistic=statistic,
                    n_seeds=n_seeds,
                    n_tasks=n_tasks,
                    value=est.value,
                    ci_low=est.low,
                    ci_high=est.high,
                )
            )
    return rows


def format_markdown(rows: Sequence[dict[str, object]], heading: str) -> str:
    """Render table rows as markdown: one line per task or aggregate, one column per agent."""
    agents = sorted({str(r['agent']) for r in rows})
    cells: dict[str, dict[str, str]] = {}  # line label -> agent -> cell; dicts keep row order
    for row in rows:
        if row['task'] == 'all tasks':
            label = f'**{row["statistic"]}** across tasks'
            count = f'{row["n_seeds"]} seeds x {row["n_tasks"]} tasks'
        else:
            label, count = str(row['task']), f'{row["n_seeds"]} seeds'
        cells.setdefault(label, {})[str(row['agent'])] = (
            f'{row["value"]:.1f} [{row["ci_low"]:.1f}, {row["ci_high"]:.1f}] ({count})'
        )
    lines = [heading, '', '| task | ' + ' | '.join(agents) + ' |', '|---' * (len(agents) + 1) + '|']
    for label, by_agent in cells.items():
        lines.append(f'| {label} | ' + ' | '.join(by_agent.get(a, '-') for a in agents) + ' |')
    return '\n'.join(lines) + '\n'


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
    agents = sorted({agent for curves in curves_by_metric.values() for _, agent in curves})
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

    fig.legend(
        [legend_handles[a] for a in agents if a in legend_handles],
        [_legend_label(a, curves_by_metric) for a in agents if a in legend_handles],
        loc='outside lower center',
        ncols=min(len(legend_handles), 5),
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


def _write_table(curves, metric, out: Path, window: int, reps: int, seed: int) -> str:
    """Compute the final-score table, write ``<out stem>_table.{csv,md}``, return the markdown."""
    scores = {key: final_scores(group, window) for key, group in curves.items()}
    matrices = score_matrices(scores)
    rows = table_rows(
        task_estimates(scores, reps=reps, seed=seed),
        {key: len(group.seeds) for key, group in curves.items()},
        aggregate_estimates(matrices, reps=reps, seed=seed),
        matrices,
    )
    label, _ = metric_display(metric)
    heading = (
        f'Final {metric} in {label}, last {window} evaluation(s): mean over seeds '
        f'[95% bootstrap CI] per task; IQM and mean across tasks with stratified-bootstrap '
        f'95% CIs (rliable).'
    )
    markdown = format_markdown(rows, heading)
    stem = out.with_suffix('')
    with open(f'{stem}_table.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=['metric', *rows[0]])
        writer.writeheader()
        writer.writerows({'metric': metric, **row} for row in rows)
    Path(f'{stem}_table.md').write_text(markdown)
    return markdown


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse command-line flags."""
    parser = argparse.ArgumentParser(
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
        help='print final scores per task and IQM/mean across tasks; also write '
        '<out stem>_table.csv and _table.md',
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the plotting command; return the process exit status."""
    args = parse_args(argv)
    # Our progress messages at INFO; other libraries' (rliable logs each agent) only at WARNING.
    logging.basicConfig(format='%(levelname)s: %(message)s', level=logging.WARNING)
    log.setLevel(logging.INFO)
    try:
        runs = load_runs(args.runs)
        drawn, table_metric = choose_metrics(runs, args.metric)
        curves_by_metric = {metric: group_curves(runs, metric) for metric in drawn}
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        figure = draw_curves(curves_by_metric, reps=args.reps, seed=args.seed, title=args.title)
        figure.savefig(out, dpi=150)
        n_groups = len({key for curves in curves_by_metric.values() for key in curves})
        log.info('wrote %s (%d runs, %d env/agent groups)', out, len(runs), n_groups)
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
                    table_curves, table_metric, out, args.final_window, args.reps, args.seed
                )
            )
    except UserError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
