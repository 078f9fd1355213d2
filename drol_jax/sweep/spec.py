"""Sweep files and their expansion into jobs.

A sweep file is a Python file with ``get_sweep()`` returning a dict (or a ``ConfigDict``); a
file that holds several sweeps takes an argument, chosen on the command line as
``FILE:ARGUMENT`` (as ml_collections does for config files). Keys:

- ``name``: the sweep's name and folder (default: the file name);
- ``envs``: environment names (short or full; each job uses the canonical name);
- ``agents``: agent files (relative paths are looked up from the current folder, then from the
  repository root);
- ``presets``: ``--preset`` values (default ``['paper']``);
- ``flags``: fixed flags, ``{'offline_steps': 500_000, 'agent.batch_size': 32}``;
- ``grid``: flags to vary, ``{'agent.num_candidates': [1, 2, 4]}``; every combination is a job;
- ``seed`` and ``num_seeds``: each job trains seeds ``seed .. seed+num_seeds-1`` in one process;
- ``seeds_per_job``: split those seeds into jobs of at most this many (default: all in one);
  online fine-tuning trains one seed per process, so offline-to-online sweeps set 1.

One job is one (environment, agent file, preset, grid point, group of seeds): one ``main.py``
command. Each job's settings are resolved and checked as its run will resolve them
(``drol_jax.settings``), so a dry run refuses a value the run would refuse, with the run's error
line. Its command is written from those settings: the preset's values as explicit
``--agent.*`` flags (so it is self-contained), and a run group of its own for every grid point,
so variants never share run folders.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import itertools
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import drol_jax
from drol_jax import run_flags
from drol_jax.agent_file import AgentFile, load_agent_file
from drol_jax.envs import registry
from drol_jax.errors import AgentFileError, ConfigError, UserError, did_you_mean
from drol_jax.presets import run_label
from drol_jax.run_flags import RunConfig
from drol_jax.run_folders import run_dir_for
from drol_jax.settings import Settings, resolve

SWEEP_KEYS = (
    'name',
    'envs',
    'agents',
    'presets',
    'flags',
    'grid',
    'seed',
    'num_seeds',
    'seeds_per_job',
)
# Run flags a sweep sets itself; naming them in ``flags`` or ``grid`` would break packing,
# idempotent re-runs or folder separation.
RESERVED_FLAGS = {
    'env_name': "the sweep's 'envs'",
    'agent': "the sweep's 'agents'",
    'preset': "the sweep's 'presets'",
    'seed': "the sweep's 'seed'",
    'num_seeds': "the sweep's 'num_seeds' (or --num_seeds)",
    'save_dir': 'the --save_dir option of the sweep command',
    'run_group': "the sweep's 'name' (each grid point gets its own run group)",
    'resume': 'nothing: a job adds --resume when its folders hold a checkpoint',
}
# Batch jobs write to log files, where progress bars are noise.
DEFAULT_RUN_FLAGS = {'progress': False}
_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]*')


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A validated sweep file."""

    name: str
    source: str
    envs: tuple[str, ...]
    agents: tuple[str, ...]
    presets: tuple[str, ...]
    flags: dict[str, Any]
    grid: dict[str, tuple]
    seed: int
    num_seeds: int
    seeds_per_job: int | None = None


@dataclasses.dataclass(frozen=True)
class Job:
    """One ``main.py`` command: every seed of one (task, agent file, preset, grid point).

    ``key`` names the job (``run_group/env/agent/seeds<a>-<b>``) and its folder under the sweep
    folder's ``jobs/``; ``label`` is the ``run_label`` its runs will record; ``agent_config`` the
    hyperparameters its runs train with.
    """

    key: str
    env_name: str
    task_family: str
    agent_file: str
    agent_name: str
    preset: str
    label: str
    run_group: str
    seeds: tuple[int, ...]
    args: tuple[str, ...]
    run_dirs: tuple[str, ...]
    total_steps: int
    preset_values: dict[str, Any]
    preset_note: str
    # Every hyperparameter the job's runs use (the agent file's defaults, the preset, the
    # explicit values): what its cost estimate depends on.
    agent_config: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def command(self) -> str:
        """The shell command, as run from the repository root (without ``--resume``)."""
        return shlex.join(['python', 'main.py', *self.args])

    @property
    def seed_range(self) -> str:
        """``0-7`` or ``3``."""
        first, last = self.seeds[0], self.seeds[-1]
        return f'{first}' if first == last else f'{first}-{last}'

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Job:
        """Rebuild a job from its ``sweep.json`` entry."""
        values = dict(payload)
        for name in ('seeds', 'args', 'run_dirs'):
            values[name] = tuple(values[name])
        return cls(**values)


def repository_root() -> Path:
    """The folder holding ``main.py`` (the package is installed in editable mode from it)."""
    root = Path(drol_jax.__file__).resolve().parent.parent
    if not (root / 'main.py').is_file():
        raise UserError(
            f'no main.py beside the drol_jax package in {root}; install the repository with '
            '`pip install -e .` and run sweeps from its checkout.'
        )
    return root


# --------------------------------------------------------------------------------- loading


def split_source(source: str) -> tuple[str, str | None]:
    """``sweeps/ogbench.py:fql`` -> (``sweeps/ogbench.py``, ``fql``); no argument -> None."""
    if not os.path.exists(source) and ':' in source:
        path, argument = source.rsplit(':', 1)
        return path, argument
    return source, None


def _call_get_sweep(path: str, argument: str | None) -> Any:
    """Import the sweep file and call its ``get_sweep``, every failure as one ``UserError``."""
    if not os.path.isfile(path):
        raise UserError(f'sweep file {path!r} does not exist.')
    name = f'_sweep_file_{Path(path).stem}'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - a user's file: report it in one line.
        raise UserError(
            f'sweep file {path!r} could not be imported: {type(e).__name__}: {e}'
        ) from e
    get_sweep = getattr(module, 'get_sweep', None)
    if not callable(get_sweep):
        raise UserError(f'sweep file {path!r} defines no get_sweep().')
    arguments = () if argument is None else (argument,)
    try:
        inspect.signature(get_sweep).bind(*arguments)
    except TypeError:
        if argument is None:
            raise UserError(
                f'sweep file {path!r} holds several sweeps: name one as {path}:ARGUMENT '
                '(its docstring lists them).'
            ) from None
        raise UserError(f'sweep file {path!r} takes no argument (got {argument!r}).') from None
    try:
        return get_sweep(*arguments)
    except Exception as e:  # noqa: BLE001
        raise UserError(f'sweep file {path!r}: get_sweep failed: {type(e).__name__}: {e}') from e


def _string_list(value: Any, key: str, path: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ConfigError(f'sweep file {path!r}: {key!r} must be a non-empty list of strings.')
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(f'sweep file {path!r}: {key!r} must hold strings only.')
    return tuple(value)


def _check_flag_names(names, path: str) -> None:
    known = {flag.name for flag in run_flags.RUN_FLAGS}
    for name in names:
        if name in RESERVED_FLAGS:
            raise ConfigError(
                f'sweep file {path!r} sets {name!r}, which the sweep sets itself: use '
                f'{RESERVED_FLAGS[name]}.'
            )
        if not name.startswith('agent.') and name not in known:
            raise ConfigError(
                f'sweep file {path!r}: {name!r} is not a flag of main.py.'
                f'{did_you_mean(name, known - set(RESERVED_FLAGS))}'
            )


def load_sweep(source: str) -> Sweep:
    """Load and validate ``FILE`` or ``FILE:ARGUMENT``; raise ``UserError`` on any mistake."""
    path, argument = split_source(source)
    raw = _call_get_sweep(path, argument)
    if hasattr(raw, 'to_dict'):
        raw = raw.to_dict()
    if not isinstance(raw, Mapping):
        raise ConfigError(f'sweep file {path!r}: get_sweep() must return a dict.')
    unknown = sorted(set(raw) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(
            f'sweep file {path!r}: unknown key(s) {", ".join(map(repr, unknown))}; '
            f'known: {", ".join(SWEEP_KEYS)}.'
        )
    for key in ('envs', 'agents'):
        if key not in raw:
            raise ConfigError(f'sweep file {path!r} lacks {key!r}.')
    name = raw.get('name', Path(path).stem)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f'sweep file {path!r}: name {name!r} must be letters, digits, ".", "_" or "-".'
        )
    presets = _string_list(raw.get('presets', ['paper']), 'presets', path)
    fixed = dict(raw.get('flags', {}))
    grid = {}
    for key, values in dict(raw.get('grid', {})).items():
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise ConfigError(f'sweep file {path!r}: grid {key!r} must be a non-empty list.')
        grid[key] = tuple(values)
    both = sorted(set(fixed) & set(grid))
    if both:
        raise ConfigError(f'sweep file {path!r}: {", ".join(both)} in both flags and grid.')
    _check_flag_names([*fixed, *grid], path)
    seed, num_seeds = raw.get('seed', 0), raw.get('num_seeds', 1)
    if not isinstance(seed, int) or seed < 0 or not isinstance(num_seeds, int) or num_seeds < 1:
        raise ConfigError(f'sweep file {path!r}: seed must be >= 0 and num_seeds >= 1 (integers).')
    seeds_per_job = raw.get('seeds_per_job')
    if seeds_per_job is not None and (
        isinstance(seeds_per_job, bool) or not isinstance(seeds_per_job, int) or seeds_per_job < 1
    ):
        raise ConfigError(f'sweep file {path!r}: seeds_per_job must be an integer >= 1.')
    return Sweep(
        name=name,
        source=source,
        envs=_string_list(raw['envs'], 'envs', path),
        agents=_string_list(raw['agents'], 'agents', path),
        presets=presets,
        flags=fixed,
        grid=grid,
        seed=seed,
        num_seeds=num_seeds,
        seeds_per_job=seeds_per_job,
    )


# ------------------------------------------------------------------------------- expansion


def _slug(value: Any) -> str:
    """A flag value as a folder-name fragment."""
    return re.sub(r'[^A-Za-z0-9.+_-]+', '_', run_flags.format_value(value)).strip('_') or '_'


def _resolve_agent_path(path: str, root: Path) -> str:
    for candidate in (Path(path), root / path):
        if candidate.is_file():
            return str(candidate.resolve())
    raise AgentFileError(
        f'agent file {path!r} not found (looked in the current folder and {root}).'
    )


def _display_path(path: str, root: Path) -> str:
    """Paths inside the repository relative to it (commands run from its root)."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def expand(sweep: Sweep, save_dir: str, num_seeds: int | None = None) -> list[Job]:
    """All jobs of ``sweep``, their runs under ``save_dir/<name>/runs``.

    ``num_seeds`` overrides the file's (``seeds_per_job`` still splits them). Every job's
    settings are resolved and checked as its run will do it, so a ``UserError`` names the first
    value a job would refuse (an unknown environment or flag value, a misspelt or out-of-range
    hyperparameter), or two jobs that would share a folder.
    """
    root = repository_root()
    num_seeds = sweep.num_seeds if num_seeds is None else num_seeds
    if num_seeds < 1:
        raise ConfigError(f'--num_seeds must be >= 1, got {num_seeds}.')
    runs_dir = os.path.abspath(os.path.join(save_dir, sweep.name, 'runs'))
    agents = {}
    for path in sweep.agents:
        absolute = _resolve_agent_path(path, root)
        agents[absolute] = load_agent_file(absolute)
        _check_hyperparameter_names(sweep, agents[absolute], _display_path(absolute, root))
    varying = [k for k, values in sweep.grid.items() if len(values) > 1]
    per_job = sweep.seeds_per_job or num_seeds
    seed_groups = [
        (first, min(per_job, sweep.seed + num_seeds - first))
        for first in range(sweep.seed, sweep.seed + num_seeds, per_job)
    ]
    points = [
        dict(zip(sweep.grid, combo, strict=True))
        for combo in itertools.product(*sweep.grid.values())
    ]
    jobs, by_folder = [], {}
    for env in sweep.envs:
        env_name = registry.resolve(env).name
        for absolute, agent in agents.items():
            for preset, point, (first, count) in itertools.product(
                sweep.presets, points, seed_groups
            ):
                variant = [f'preset={preset}'] if len(sweep.presets) > 1 else []
                variant += [f'{k.removeprefix("agent.")}={_slug(point[k])}' for k in varying]
                run_group = '-'.join([sweep.name, *variant])
                chosen = {**sweep.flags, **point}
                flags = {
                    **DEFAULT_RUN_FLAGS,
                    **{k: v for k, v in chosen.items() if not k.startswith('agent.')},
                    'env_name': env_name,
                    'preset': preset,
                    'seed': first,
                    'num_seeds': count,
                    'save_dir': runs_dir,
                    'run_group': run_group,
                }
                explicit = {
                    k[len('agent.') :]: v for k, v in chosen.items() if k.startswith('agent.')
                }
                where = f'sweep {sweep.source}, job {run_group}/{env_name}/{Path(absolute).name}'
                settings = _job_settings(flags, agent, explicit, where)
                job = _job(settings, _display_path(absolute, root), runs_dir)
                folder = job.run_dirs[0]
                if folder in by_folder:
                    raise ConfigError(
                        f'sweep {sweep.source}: jobs {by_folder[folder]} and {job.key} would '
                        'share run folders; give their agent files different agent_name values.'
                    )
                by_folder[folder] = job.key
                jobs.append(job)
    return jobs


def _check_hyperparameter_names(sweep: Sweep, agent: AgentFile, shown_path: str) -> None:
    """Every ``agent.*`` key of the sweep names a hyperparameter of the agent file."""
    known = agent.default_config().keys()
    for key in [*sweep.flags, *sweep.grid]:
        name = key.removeprefix('agent.')
        if key.startswith('agent.') and name.split('.')[0] not in known:
            raise ConfigError(
                f'{key} is not a hyperparameter of {shown_path} (sweep {sweep.source}).'
                f'{did_you_mean(name, known)}'
            )


def _job_settings(
    flags: dict[str, Any], agent: AgentFile, explicit: dict[str, Any], where: str
) -> Settings:
    """A job's settings, resolved as its run will resolve them; its error names the job."""
    try:
        return resolve(RunConfig(**flags), agent, explicit, given_flags=flags)
    except UserError as e:
        raise type(e)(f'{e} ({where})') from None


def _job(settings: Settings, agent_path: str, runs_dir: str) -> Job:
    """The job that runs ``settings``: its command, folders and what it will record."""
    run, name = settings.run, settings.agent_name
    seeds = settings.seeds
    return Job(
        key=f'{run.run_group}/{settings.env.name}/{name}/seeds{seeds[0]}-{seeds[-1]}',
        env_name=settings.env.name,
        task_family=settings.env.task_family,
        agent_file=settings.agent.path,
        agent_name=name,
        preset=run.preset,
        label=run_label(settings.preset, settings.explicit),
        run_group=run.run_group,
        seeds=seeds,
        args=tuple(settings.command_args(agent_path)),
        run_dirs=tuple(
            run_dir_for(runs_dir, run.run_group, settings.env.name, name, s) for s in seeds
        ),
        total_steps=settings.total_steps,
        preset_values=settings.preset.values,
        preset_note=settings.preset.note,
        agent_config=settings.record()['agent'],
    )


def sweep_dir(save_dir: str, sweep: Sweep) -> str:
    """The sweep's folder: its job list, job states and logs, and (under ``runs/``) its runs."""
    return os.path.abspath(os.path.join(save_dir, sweep.name))
