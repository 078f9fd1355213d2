"""The final-score table: cells per task or task family, aggregates, Markdown, CSV and LaTeX.

Rows are OGBench task families (or tasks with ``by='task'``) and D4RL tasks, columns are run
labels, and each benchmark closes with the IQM and mean over all its tasks (rliable).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drol_jax.errors import UserError
from drol_jax.plot.runs import metric_display, natural_key
from drol_jax.plot.stats import SeedCurves, aggregate_estimates, final_scores, score_matrices

log = logging.getLogger(__name__)

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


# A run label is a name followed by ``key=value`` settings; a value may hold spaces ("(64, 64)").
_SETTING_START = re.compile(r' (?=[A-Za-z_][\w.]*=)')


def factor_shared_settings(labels: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Move the ``key=value`` settings every label carries out of the labels.

    A sweep that sets the same override for every agent (small networks on the toy task) labels
    its runs 'DROL(16) batch_size=64', 'FQL batch_size=64'; the columns should read 'DROL(16)'
    and 'FQL', the shared setting said once. Returns (label -> column name, shared settings).
    Distinct labels stay distinct: only settings common to all of them are removed.
    """
    parts = {label: _SETTING_START.split(label) for label in labels}
    shared = set.intersection(*(set(words[1:]) for words in parts.values())) if parts else set()
    columns = {
        label: ' '.join([words[0], *(w for w in words[1:] if w not in shared)])
        for label, words in parts.items()
    }
    return columns, sorted(shared)


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


def write_table(
    curves: dict[tuple[str, str], SeedCurves],
    metric: str,
    out: Path,
    window: int,
    reps: int,
    seed: int,
    by: str,
) -> str:
    """Compute the final-score table, write ``<out stem>_table.{csv,md,tex}``, return Markdown.

    A seed's final score is the mean of its last ``window`` aligned evaluations of ``metric``;
    ``reps`` and ``seed`` drive the aggregates' bootstrap and ``by`` ('family' or 'task')
    chooses the rows.
    """
    scores = {
        key: dict(zip(group.seeds, map(float, final_scores(group, window)), strict=True))
        for key, group in curves.items()
    }
    columns, shared = factor_shared_settings(sorted({label for _, label in scores}))
    scores = {(env_name, columns[label]): s for (env_name, label), s in scores.items()}
    rows = table_rows(scores, by, reps, seed)
    unit, _ = metric_display(metric)
    rows_are = 'task family (mean over its tasks)' if by == 'family' else 'task'
    heading = (
        f'Final {metric} in {unit}, last {window} evaluation(s). One row per {rows_are}: mean '
        f'over seeds ± standard deviation over seeds; IQM and mean over all tasks of a '
        f'benchmark [stratified-bootstrap 95% CI, rliable]. Columns: run labels.'
    )
    if shared:
        heading += f' Every column ran with {", ".join(shared)}.'
    stem = out.with_suffix('')
    with open(f'{stem}_table.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_FIELDS)
        writer.writeheader()
        writer.writerows({'metric': metric, **row} for row in rows)
    markdown = format_markdown(rows, heading, by)
    Path(f'{stem}_table.md').write_text(markdown)
    Path(f'{stem}_table.tex').write_text(format_latex(rows, heading, by))
    return markdown
