"""Reading runs: our run folders and FQL's, their ``eval.csv`` columns and ``flags.json``.

A run is any folder holding an ``eval.csv``; its environment, agent, seed and run label come
from the ``flags.json`` beside it (inferred from the path, with a warning, where it lacks them).
Runs are told apart by environment, label and agent settings, never by folder.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from drol_jax.errors import UserError

log = logging.getLogger(__name__)

SUCCESS = 'evaluation/success'
RETURN = 'evaluation/episode.return'

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


def metric_display(metric: str) -> tuple[str, float]:
    """Return the axis label (with units) and the multiplier that converts logged values to it."""
    return _METRIC_DISPLAY.get(metric, (metric, 1.0))


def natural_key(text: str) -> list:
    """Sort key that orders numbers by value: 'K=2' before 'K=16'."""
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', text)]


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
