"""Seed alignment and statistics: bootstrap confidence bands, final scores, rliable aggregates.

Pure functions over ``Run`` columns and score arrays; nothing here reads or writes files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from drol_jax.errors import UserError
from drol_jax.plot.runs import Run, metric_display

log = logging.getLogger(__name__)

CONFIDENCE = 0.95


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

    Returns ``{agent: {'IQM': Estimate, 'mean': Estimate}}``; equal ``seed``, equal intervals.
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

    # rliable 1.2.0 draws its stratified resamples from numpy's global generator whatever
    # `random_state` it is given, so ``seed`` seeds that generator; the caller's state is put
    # back afterwards.
    saved_state = np.random.get_state()
    np.random.seed(seed)
    try:
        points, intervals = rly.get_interval_estimates(
            matrices, iqm_and_mean, reps=reps, confidence_interval_size=CONFIDENCE
        )
    finally:
        np.random.set_state(saved_state)
    return {
        agent: {
            name: Estimate(float(points[agent][i]), *map(float, intervals[agent][:, i]))
            for i, name in enumerate(('IQM', 'mean'))
        }
        for agent in matrices
    }
