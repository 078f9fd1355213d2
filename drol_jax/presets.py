"""Published per-task settings as data: the ``--preset`` flag.

Each agent file may hold ``PUBLISHED_SETTINGS = {preset: {task family pattern: values}}``
(see ``drol_jax.agent_file``). A task family is what the environment registry files a task
under (``cube-single-play`` for every ``cube-single-play-singletask-task<k>-v0``,
``antmaze-large-play`` for D4RL's ``antmaze-large-play-v2``); a pattern is that name or an
``fnmatch`` pattern (``pen-*``). An exact name wins over patterns; among patterns the first
listed wins.

Precedence: the agent file's defaults < the preset's values < explicit ``--agent.*`` flags.
``--preset=none`` applies nothing. ``python -m drol_jax.presets AGENT_FILE...`` prints the
tables as the Markdown the README shows.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from drol_jax.agent_file import AgentFile, load_agent_file
from drol_jax.cli import reports_user_errors
from drol_jax.envs import registry
from drol_jax.errors import AgentFileError, UserError
from drol_jax.run_flags import PRESETS


@dataclasses.dataclass(frozen=True)
class AppliedPreset:
    """What a preset sets for one task.

    Attributes:
        name: the preset ('paper', 'paper-tuned', 'paper-online' or 'none').
        task_family: the task's family, the key the tables are read with.
        values: the hyperparameters the preset sets (empty when none applies).
        label: the display name of the agent under this preset in tables, from the file's
            ``PRESET_LABELS`` ('DROL(16)', 'DROL*', 'FQL') whether or not the task has a
            setting (a run on the defaults is still that column of the paper's tables); the
            agent name for ``--preset=none`` and for files without a label.
        note: one line saying what was applied, or why nothing was.
        pattern: the table entry that matched ``task_family`` (None when none applies).
    """

    name: str
    task_family: str | None
    values: dict[str, Any]
    label: str
    note: str
    pattern: str | None = None


def find_settings(
    table: Mapping[str, Mapping[str, Any]], task_family: str
) -> tuple[str, dict] | None:
    """The ``(pattern, values)`` entry of ``table`` for ``task_family``, or None."""
    if task_family in table:
        return task_family, dict(table[task_family])
    for pattern, values in table.items():
        if fnmatch.fnmatchcase(task_family, pattern):
            return pattern, dict(values)
    return None


def settings_for(agent: AgentFile, agent_name: str, task_family: str, preset: str) -> AppliedPreset:
    """Look up ``preset`` (one of ``PRESETS``) for ``task_family`` in ``PUBLISHED_SETTINGS``."""
    if preset not in PRESETS:
        raise AgentFileError(f'--preset must be one of {", ".join(PRESETS)}, got {preset!r}.')
    if preset == 'none':
        return AppliedPreset(preset, task_family, {}, agent_name, 'preset none: agent defaults.')
    tables = agent.published_settings
    unset_label = agent.preset_labels.get(preset, agent_name)
    if not tables:
        note = f'no preset applies: {agent_name} publishes no settings; agent defaults.'
        return AppliedPreset(preset, task_family, {}, unset_label, note)
    found = find_settings(tables.get(preset, {}), task_family)
    if found is None:
        note = (
            f'no preset applies: {agent_name} has no {preset!r} setting for task family '
            f'{task_family!r}; agent defaults.'
        )
        return AppliedPreset(preset, task_family, {}, unset_label, note)
    pattern, values = found
    label = agent.preset_labels.get(preset, f'{agent_name} ({preset})')
    shown = ', '.join(f'{k}={v}' for k, v in values.items())
    note = f'preset {preset} for {task_family} ({pattern}): {shown}.'
    return AppliedPreset(preset, task_family, values, label, note, pattern)


def apply_preset(config, applied: AppliedPreset, explicit: Mapping[str, Any]):
    """Set the preset's values on ``config`` (a ConfigDict) except where a flag set them."""
    for key, value in applied.values.items():
        if key not in config:
            raise AgentFileError(
                f'PUBLISHED_SETTINGS of the agent file names {key!r}, which get_config() lacks.'
            )
        if key not in explicit:
            config[key] = value
    return config


def run_label(applied: AppliedPreset, overrides: Mapping[str, Any]) -> str:
    """The preset's label plus every explicit override that differs from the preset's value.

    Two runs with the same label used the same settings, so tables may pool them; a K sweep on
    top of ``paper`` gives 'DROL(16) num_candidates=4', never plain 'DROL(16)'.
    """
    missing = object()
    differing = [
        f'{k}={v}' for k, v in sorted(overrides.items()) if applied.values.get(k, missing) != v
    ]
    return ' '.join([applied.label, *differing])


def known_task_families() -> list[str]:
    """Every task family the registry knows, sorted."""
    names = (name for family in registry.FAMILIES for name in family.known_names())
    return sorted({registry.resolve(name).task_family for name in names})


def markdown_table(agents: Sequence[AgentFile]) -> str:
    """One row per task family with a published setting, one column per (agent, preset).

    A preset whose table repeats an earlier one of the same agent (FQL's single setting serves
    both presets) gets no column of its own.
    """
    columns = []
    for agent in agents:
        name = agent.default_config()['agent_name']
        seen = []
        for preset, table in agent.published_settings.items():
            if table in seen:
                continue
            seen.append(table)
            columns.append((agent.preset_labels.get(preset, f'{name} ({preset})'), preset, table))
    families = known_task_families()
    patterns = dict.fromkeys(p for _, _, table in columns for p in table)
    rows = dict.fromkeys(
        f for pattern in patterns for f in families if fnmatch.fnmatchcase(f, pattern)
    )
    header = ['task family'] + [f'{label} (`--preset={preset}`)' for label, preset, _ in columns]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for family in rows:
        cells = [family]
        for _, _, table in columns:
            found = find_settings(table, family)
            cells.append(', '.join(f'{k}={v}' for k, v in found[1].items()) if found else '-')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


@reports_user_errors
def main(argv: Sequence[str]) -> int:
    """Print the published-settings table of the given agent files."""
    if not argv:
        raise UserError('usage: python -m drol_jax.presets AGENT_FILE [AGENT_FILE ...]')
    print(markdown_table([load_agent_file(path) for path in argv]))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
