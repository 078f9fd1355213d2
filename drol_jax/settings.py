"""A run's settings, resolved once before it starts.

``resolve`` turns the run flags, the agent file, the preset and the explicit ``--agent.*``
values into one frozen, checked ``Settings``: precedence is the agent file's defaults < the
preset's values < explicit values, and every check runs here, before any data is loaded. The
run (``drol_jax.train.run``) only reads the result; a sweep job's command is written from it
(``Settings.command_args``), so a sweep's dry run checks each job exactly as the job would.

Homes of the checks: run flags in ``drol_jax.run_flags``, agent hyperparameters in
``drol_jax.hyperparameters`` (with the agent file's rules), environment names and data options
in ``drol_jax.envs.registry``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import ml_collections

from drol_jax import presets, run_flags
from drol_jax.agent_file import AgentFile
from drol_jax.envs import registry
from drol_jax.errors import ConfigError
from drol_jax.files import json_ready
from drol_jax.hyperparameters import check_agent_config, check_known
from drol_jax.run_flags import RUN_FLAGS, RunConfig, check_run_config


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a run uses, resolved and checked; nothing changes it afterwards.

    Attributes:
        run: the run flags.
        agent: the agent file.
        agent_config: the agent's hyperparameters (defaults < preset < explicit), frozen.
        env: the resolved environment (canonical name, family, task family).
        preset: what the preset set for this task.
        explicit: the hyperparameters given explicitly (``--agent.*``), as the run uses them.
        given_flags: the run flags given explicitly (on the command line or by a sweep).
    """

    run: RunConfig
    agent: AgentFile
    agent_config: ml_collections.FrozenConfigDict
    env: registry.ResolvedEnv
    preset: presets.AppliedPreset
    explicit: Mapping[str, Any]
    given_flags: frozenset[str]

    @property
    def agent_name(self) -> str:
        """The agent's name (a folder level of the run folders)."""
        return self.agent_config['agent_name']

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds trained together: ``seed .. seed + num_seeds - 1``."""
        return tuple(range(self.run.seed, self.run.seed + self.run.num_seeds))

    @property
    def total_steps(self) -> int:
        """Offline updates plus online fine-tuning steps."""
        return self.run.offline_steps + self.run.online_steps

    def settings_line(self) -> str:
        """What the run prints as ``Settings:``: the values it uses, each with where it came from.

        ``bc_coef=3.0 (explicit; preset 10.0)``: an explicit value that beat the preset's.
        """
        marked = []
        for key in dict.fromkeys([*self.preset.values, *self.explicit]):
            value = self.agent_config[key]
            if key not in self.explicit:
                mark = 'preset'
            elif key not in self.preset.values:
                mark = 'explicit'
            elif self.preset.values[key] == value:
                mark = 'explicit, as the preset'
            else:
                mark = f'explicit; preset {self.preset.values[key]}'
            marked.append(f'{key}={value} ({mark})')
        values = ', '.join(marked)
        if self.preset.values:
            head = (
                f'preset {self.preset.name} for {self.preset.task_family} ({self.preset.pattern})'
            )
            return f'{head}: {values}.'
        head = self.preset.note.rstrip('.')
        return f'{head}, except {values}.' if marked else f'{head}.'

    def record(self) -> dict[str, Any]:
        """The run's record (``flags.json``, without the seed and dataset), JSON-ready.

        Every run flag, the agent file and config, the preset with the values it set, the
        explicit values and the label results tables use.
        """
        explicit = dict(self.explicit)
        return json_ready(
            {
                **dataclasses.asdict(self.run),
                'agent_file': self.agent.path,
                'env_name': self.env.name,
                'requested_env_name': self.run.env_name,
                'agent': self.agent_config.to_dict(),
                'preset_values': self.preset.values,
                'agent_overrides': explicit,
                'run_label': presets.run_label(self.preset, explicit),
            }
        )

    def resume_differences(self, recorded: Mapping[str, Any], seed: int) -> tuple[dict, dict]:
        """How these settings differ from seed ``seed``'s record: ``(refused, accepted)``.

        Both map a name to ``(recorded value, current value)``.
        A changed hyperparameter, a changed ``'fixed'`` run flag and a shortened run are refused
        (``--allow_changes`` accepts them); other changes, e.g. more ``--offline_steps``, are
        accepted. Hyperparameters are named ``agent.<name>``.
        """
        current = {**self.record(), 'seed': seed}
        refused, accepted = run_flags.resume_differences(recorded, current)
        old_agent, new_agent = recorded.get('agent', {}), current['agent']
        for key in dict.fromkeys([*old_agent, *new_agent]):
            if old_agent.get(key) != new_agent.get(key):
                refused[f'agent.{key}'] = (old_agent.get(key), new_agent.get(key))
        return refused, accepted

    def command_args(self, agent_path: str) -> list[str]:
        """main.py's arguments for these settings: self-contained, the preset's values explicit.

        ``--env_name``, ``--agent``, ``--preset``, every value the preset set or that was given
        (``--agent.*``), then the other run flags that were given.
        """
        agent_values = dict.fromkeys([*self.preset.values, *self.explicit])
        first = {'env_name', 'preset'}
        return [
            f'--env_name={self.env.name}',
            f'--agent={agent_path}',
            *run_flags.command_args(self.run, ['preset']),
            *(f'--agent.{k}={run_flags.format_value(self.agent_config[k])}' for k in agent_values),
            *run_flags.command_args(self.run, self.given_flags - first),
        ]


def resolve(
    run: RunConfig,
    agent: AgentFile,
    explicit: Mapping[str, Any] | None = None,
    *,
    config: ml_collections.ConfigDict | None = None,
    given_flags: Iterable[str] = (),
) -> Settings:
    """Check everything and build the run's ``Settings``; raise a one-line ``UserError``.

    Args:
        run: the run flags.
        agent: the agent file.
        explicit: hyperparameters given explicitly (``{'bc_coef': 3.0}``); they beat the preset.
        config: the agent config to start from (default: the file's ``get_config()``); it is
            copied, never changed.
        given_flags: the run flags given explicitly (recorded; a sweep job's command lists them).
    """
    check_run_config(run)
    env = registry.resolve(run.env_name)
    registry.check_options(env, run.data)
    registry.check_image_flags(env, run.frame_stack, run.p_aug, run.online_steps)
    agent_config = (
        agent.default_config() if config is None else config
    ).copy_and_resolve_references()
    explicit = dict(explicit or {})
    check_known(explicit, agent_config.keys())
    for key, value in explicit.items():
        _set(agent_config, key, value)
    applied = presets.settings_for(
        agent, agent_config.get('agent_name', ''), env.task_family, run.preset
    )
    presets.apply_preset(agent_config, applied, explicit)
    check_agent_config(agent_config, agent.hyperparameter_checks)
    return Settings(
        run=run,
        agent=agent,
        agent_config=ml_collections.FrozenConfigDict(agent_config),
        env=env,
        preset=applied,
        # As the config holds them (ml_collections casts 3 to 3.0 for a float entry).
        explicit=MappingProxyType({key: _get(agent_config, key) for key in explicit}),
        given_flags=frozenset(given_flags) & {flag.name for flag in RUN_FLAGS},
    )


def _set(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    """``config.<key> = value`` for a dotted key; a value of the wrong type is a ``ConfigError``."""
    *parents, last = key.split('.')
    for parent in parents:
        config = config[parent]
    try:
        config[last] = value
    except (TypeError, ValueError) as e:
        raise ConfigError(f'--agent.{key}={value!r}: {e}') from None


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
    for part in key.split('.'):
        config = config[part]
    return config
