"""Every run flag, declared once: name, type, default, help, rule, and what ``--resume`` allows.

``RUN_FLAGS`` is the only place a run flag is written down. Everything else is derived from it:

- main.py's absl flags (``define_absl_flags``; FQL's flag names), and ``--agent`` beside them;
- ``RunConfig``, the frozen record of one run's flags (a field per flag), and ``DataOptions``,
  the part the environment families read (the flags marked ``data``);
- the checks (``check_run_config``: each flag's type and rule, then the few rules that join
  flags), the ``flags.json`` record and the sweep's command lines and flag names.

Adding a flag is one ``Flag(...)`` entry below. ``on_resume`` says whether ``--resume`` may
change it: ``'free'`` (where to write, how often to log: recorded), ``'extend'`` (may grow, as
``--offline_steps`` does to train longer), ``'fixed'`` (what is trained: a change needs
``--allow_changes``) or ``'ignore'`` (how this one command runs, e.g. ``--resume`` itself).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from absl import flags

from drol_jax.errors import ConfigError
from drol_jax.hyperparameters import Rule, at_least, in_interval

PRESETS = ('paper', 'paper-tuned', 'paper-online', 'none')
WANDB_MODES = ('disabled', 'online', 'offline')


@dataclasses.dataclass(frozen=True)
class Flag:
    """One run flag.

    Attributes:
        name: the flag (``--name``) and the ``RunConfig`` field.
        type: ``bool``, ``int``, ``float`` or ``str``; a default of None makes it optional.
        default: its value when not given.
        help: one line for ``--help``.
        rule: a value rule from ``drol_jax.hyperparameters`` (checked before anything loads).
        choices: the allowed strings (an absl enum).
        data: the environment families read it too (a ``DataOptions`` field).
        on_resume: what ``--resume`` may do with it: ``'free'``, ``'extend'``, ``'fixed'`` or
            ``'ignore'`` (not compared).
    """

    name: str
    type: type
    default: Any
    help: str
    rule: Rule | None = None
    choices: tuple[str, ...] = ()
    data: bool = False
    on_resume: str = 'free'


RUN_FLAGS: tuple[Flag, ...] = (
    Flag('env_name', str, 'cube-single', 'Task: OGBench/D4RL name, short alias, or toy-*.'),
    Flag('seed', int, 0, 'Random seed (first seed with --num_seeds).', at_least(0)),
    Flag('num_seeds', int, 1, 'Seeds trained together in one process.', at_least(1)),
    Flag(
        'preset',
        str,
        'paper',
        'Published per-task settings from the agent file: paper (DROL(16), FQL), paper-tuned '
        '(DROL*), paper-online (offline-to-online, with --online_steps), none (agent '
        'defaults). Explicit --agent.* flags win.',
        choices=PRESETS,
        on_resume='fixed',
    ),
    Flag('run_group', str, 'debug', 'Run group (a folder level).'),
    Flag('save_dir', str, 'exp', 'Root folder of run folders.'),
    Flag('restore_path', str, None, 'Folder to restore agent parameters from (as FQL).'),
    Flag('restore_epoch', int, None, 'Step of the parameters to restore.'),
    Flag(
        'resume',
        bool,
        False,
        'Continue this run from the latest checkpoint in its folder.',
        on_resume='ignore',
    ),
    Flag(
        'allow_changes',
        bool,
        False,
        "With --resume: continue although hyperparameters or flags differ from the run's "
        'record (each change is recorded in resumes.json).',
        on_resume='ignore',
    ),
    Flag(
        'offline_steps',
        int,
        1_000_000,
        'Offline updates (OGBench 1M, D4RL 500k).',
        at_least(0),
        on_resume='extend',
    ),
    Flag('online_steps', int, 0, 'Online fine-tuning steps.', at_least(0), on_resume='extend'),
    Flag(
        'buffer_size',
        int,
        2_000_000,
        'Replay buffer size (fine-tuning).',
        at_least(1),
        on_resume='fixed',
    ),
    Flag('log_interval', int, 5000, 'Steps between training log rows.', at_least(1)),
    Flag('eval_interval', int, 100_000, 'Steps between evaluations (0: never).', at_least(0)),
    Flag('save_interval', int, 1_000_000, 'Steps between checkpoints.', at_least(0)),
    Flag('block_size', int, 0, 'Updates per compiled call (0: log interval).', at_least(0)),
    Flag('eval_num_envs', int, 1, 'Env copies in worker processes for evaluation.', at_least(1)),
    Flag('eval_episodes', int, 50, 'Episodes per evaluation.', at_least(0)),
    Flag('video_episodes', int, 0, 'Rendered episodes per evaluation.', at_least(0)),
    Flag('video_frame_skip', int, 3, 'Keep every n-th video frame.', at_least(1)),
    Flag(
        'balanced_sampling',
        bool,
        False,
        'Fine-tuning batches half dataset, half replay.',
        on_resume='fixed',
    ),
    Flag('dataset_dir', str, '~/.ogbench/data', 'OGBench dataset cache (reused).', data=True),
    Flag(
        'dataset_path',
        str,
        None,
        'Explicit dataset file (overrides every other source).',
        data=True,
        on_resume='fixed',
    ),
    Flag(
        'generated_dir', str, '~/.drol_jax/generated', 'Cache for regenerated datasets.', data=True
    ),
    Flag(
        'generate_episodes',
        int,
        None,
        'Episodes to regenerate (default: published size).',
        at_least(1),
        data=True,
        on_resume='fixed',
    ),
    Flag(
        'generate_workers',
        int,
        None,
        'Processes for regeneration (default: all cores).',
        at_least(1),
        data=True,
    ),
    Flag(
        'dataset_seed',
        int,
        0,
        'Seed of a regenerated dataset; every --seed trains on the same data.',
        at_least(0),
        data=True,
        on_resume='fixed',
    ),
    Flag(
        'frame_stack',
        int,
        None,
        'Image tasks: frames stacked on channels per observation (FQL semantics; unset: 1).',
        at_least(1),
        on_resume='fixed',
    ),
    Flag(
        'p_aug',
        float,
        None,
        'Image tasks: probability per batch of the random-crop augmentation (unset: never).',
        in_interval(0, 1),
        on_resume='fixed',
    ),
    Flag('download', bool, True, 'Try the dataset server before regenerating.', data=True),
    Flag('wandb_mode', str, 'disabled', 'wandb logging.', choices=WANDB_MODES),
    Flag('wandb_project', str, 'drol_jax', 'wandb project.'),
    Flag('progress', bool, True, 'Show progress bars.', data=True),
)


def _fields(flags: Iterable[Flag]) -> list[tuple[str, type, dataclasses.Field]]:
    return [(f.name, f.type, dataclasses.field(default=f.default)) for f in flags]


def _data_options(run: RunConfig) -> DataOptions:
    """The data flags of a run, as the environment families receive them."""
    return DataOptions(**{f.name: getattr(run, f.name) for f in RUN_FLAGS if f.data})


RunConfig = dataclasses.make_dataclass(
    'RunConfig',
    _fields(RUN_FLAGS),
    frozen=True,
    namespace={'data': property(_data_options, doc='The data flags (``DataOptions``).')},
)
RunConfig.__module__ = __name__
RunConfig.__doc__ = 'The values of every run flag (``RUN_FLAGS``) of one run; frozen.'

DataOptions = dataclasses.make_dataclass(
    'DataOptions',
    # How long a stalled download waits: not a flag, tests shorten it.
    [*_fields(f for f in RUN_FLAGS if f.data), ('download_timeout_s', float, 20.0)],
    frozen=True,
)
DataOptions.__module__ = __name__
DataOptions.__doc__ = (
    'Where to look for (or put) a dataset: the data flags of ``RUN_FLAGS`` (None: the family '
    'default, e.g. the published size for ``generate_episodes``).'
)


# Rules that join several flags: (is broken, message).
_JOINT_RULES = (
    (
        lambda c: c.online_steps and c.num_seeds > 1,
        'online fine-tuning (--online_steps) trains one seed: use --num_seeds=1.',
    ),
    (
        lambda c: (c.restore_path is None) != (c.restore_epoch is None),
        '--restore_path and --restore_epoch go together.',
    ),
    (
        lambda c: c.resume and c.restore_path,
        'use either --resume (continue this run) or --restore_path, not both.',
    ),
    (
        lambda c: c.allow_changes and not c.resume,
        '--allow_changes goes with --resume (it accepts changed settings of a resumed run).',
    ),
)


_TYPE_WORDS = {bool: 'true or false', int: 'an integer', float: 'a number', str: 'a string'}


def check_run_config(run: RunConfig) -> None:
    """Raise a one-sentence ``ConfigError`` for the first flag value that breaks its rule."""
    for flag in RUN_FLAGS:
        value = getattr(run, flag.name)
        if value is None and flag.default is None:
            continue
        if not _has_type(value, flag.type):
            raise ConfigError(f'--{flag.name} must be {_TYPE_WORDS[flag.type]}, got {value!r}.')
        if flag.choices and value not in flag.choices:
            raise ConfigError(
                f'--{flag.name} must be one of {", ".join(flag.choices)}, got {value!r}.'
            )
        if flag.rule is not None and not flag.rule.test(value):
            raise ConfigError(f'--{flag.name} must be {flag.rule.requirement}, got {value!r}.')
    for broken, message in _JOINT_RULES:
        if broken(run):
            raise ConfigError(message)


def _has_type(value: Any, kind: type) -> bool:
    """``isinstance`` where a bool is no integer and an integer is a number."""
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def define_absl_flags(flag_values: flags.FlagValues, module_name: str) -> None:
    """Define every run flag on absl's ``flag_values``, as flags of ``module_name``.

    ``--help`` lists the flags of the main module, so main.py passes its own name.
    """
    define = {
        bool: flags.DEFINE_bool,
        int: flags.DEFINE_integer,
        float: flags.DEFINE_float,
        str: flags.DEFINE_string,
    }
    for flag in RUN_FLAGS:
        options = dict(flag_values=flag_values, module_name=module_name)
        if flag.choices:
            flags.DEFINE_enum(flag.name, flag.default, flag.choices, flag.help, **options)
        else:
            define[flag.type](flag.name, flag.default, flag.help, **options)


def from_absl(flag_values) -> tuple[RunConfig, frozenset[str]]:
    """The parsed run flags, and the names of those given on the command line."""
    run = RunConfig(**{flag.name: flag_values[flag.name].value for flag in RUN_FLAGS})
    given = frozenset(flag.name for flag in RUN_FLAGS if flag_values[flag.name].present)
    return run, given


def format_value(value: Any) -> str:
    """A flag value as absl and ml_collections parse it back: ``true``, ``(32,32)``, ``0.995``."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, tuple | list):
        inner = ','.join(format_value(v) for v in value)
        if isinstance(value, tuple):
            return f'({inner},)' if len(value) == 1 else f'({inner})'
        return f'[{inner}]'
    return str(value)


def command_args(run: RunConfig, names: Iterable[str]) -> list[str]:
    """``--name=value`` for the named run flags, in the order of ``RUN_FLAGS``."""
    wanted = set(names)
    return [
        f'--{f.name}={format_value(getattr(run, f.name))}' for f in RUN_FLAGS if f.name in wanted
    ]


def resume_differences(
    recorded: Mapping[str, Any], current: Mapping[str, Any]
) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """Run flags that differ between two records, as ``(refused, accepted)``.

    Each maps a flag name to ``(recorded value, current value)``. A ``'fixed'`` flag that
    changed, or an ``'extend'`` flag that shrank, is refused (unless ``--allow_changes``); any
    other difference is accepted and recorded. ``'ignore'`` flags, and flags the old record
    lacks, are not compared.
    """
    refused, accepted = {}, {}
    for flag in RUN_FLAGS:
        unchanged = recorded.get(flag.name, current[flag.name]) == current[flag.name]
        if flag.on_resume == 'ignore' or unchanged:
            continue
        old, new = recorded[flag.name], current[flag.name]
        grows = old is not None and new is not None and new > old
        refuse = flag.on_resume == 'fixed' or (flag.on_resume == 'extend' and not grows)
        (refused if refuse else accepted)[flag.name] = (old, new)
    return refused, accepted
