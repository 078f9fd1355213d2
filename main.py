"""Train an agent file on an offline-RL task.

Example: ``python main.py --agent=agents/drol.py --env_name=cube-single``.

Parses flags, loads the ``--agent`` file and hands everything to ``drol_jax.train.run``. User
mistakes print one ``error:`` line and exit with status 2.
"""

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from drol_jax import train
from drol_jax.agent_file import import_module, load_agent_file
from drol_jax.cli import fail, reports_user_errors
from drol_jax.envs.base import DataOptions
from drol_jax.errors import AgentFileError, UserError
from drol_jax.hyperparameters import check_known

FLAGS = flags.FLAGS
defaults = train.RunConfig()

flags.DEFINE_string(
    'env_name', defaults.env_name, 'Task: OGBench/D4RL name, short alias, or toy-*.'
)
flags.DEFINE_integer('seed', defaults.seed, 'Random seed (first seed with --num_seeds).')
flags.DEFINE_integer('num_seeds', defaults.num_seeds, 'Seeds trained together in one process.')
flags.DEFINE_enum(
    'preset',
    defaults.preset,
    ['paper', 'paper-tuned', 'none'],
    'Published per-task settings from the agent file: paper (DROL(16), FQL), paper-tuned '
    '(DROL*), none (agent defaults). Explicit --agent.* flags win.',
)
flags.DEFINE_string('run_group', defaults.run_group, 'Run group (a folder level).')
flags.DEFINE_string('save_dir', defaults.save_dir, 'Root folder of run folders.')
flags.DEFINE_string('restore_path', None, 'Folder to restore agent parameters from (as FQL).')
flags.DEFINE_integer('restore_epoch', None, 'Step of the parameters to restore.')
flags.DEFINE_bool('resume', False, 'Continue this run from the latest checkpoint in its folder.')
flags.DEFINE_integer(
    'offline_steps', defaults.offline_steps, 'Offline updates (OGBench 1M, D4RL 500k).'
)
flags.DEFINE_integer('online_steps', defaults.online_steps, 'Online fine-tuning steps.')
flags.DEFINE_integer('buffer_size', defaults.buffer_size, 'Replay buffer size (fine-tuning).')
flags.DEFINE_integer('log_interval', defaults.log_interval, 'Steps between training log rows.')
flags.DEFINE_integer(
    'eval_interval', defaults.eval_interval, 'Steps between evaluations (0: never).'
)
flags.DEFINE_integer('save_interval', defaults.save_interval, 'Steps between checkpoints.')
flags.DEFINE_integer(
    'block_size', defaults.block_size, 'Updates per compiled call (0: log interval).'
)
flags.DEFINE_integer(
    'eval_num_envs', defaults.eval_num_envs, 'Env copies in worker processes for evaluation.'
)
flags.DEFINE_integer('eval_episodes', defaults.eval_episodes, 'Episodes per evaluation.')
flags.DEFINE_integer('video_episodes', defaults.video_episodes, 'Rendered episodes per evaluation.')
flags.DEFINE_integer('video_frame_skip', defaults.video_frame_skip, 'Keep every n-th video frame.')
flags.DEFINE_bool('balanced_sampling', False, 'Fine-tuning batches half dataset, half replay.')
flags.DEFINE_string('dataset_dir', DataOptions.dataset_dir, 'OGBench dataset cache (reused).')
flags.DEFINE_string('dataset_path', None, 'Explicit dataset file (overrides every other source).')
flags.DEFINE_string('generated_dir', DataOptions.generated_dir, 'Cache for regenerated datasets.')
flags.DEFINE_integer('generate_episodes', None, 'Episodes to regenerate (default: published size).')
flags.DEFINE_integer('generate_workers', None, 'Processes for regeneration (default: all cores).')
flags.DEFINE_integer(
    'dataset_seed', 0, 'Seed of a regenerated dataset; every --seed trains on the same data.'
)
flags.DEFINE_bool('download', True, 'Try the dataset server before regenerating.')
flags.DEFINE_enum('wandb_mode', 'disabled', ['disabled', 'online', 'offline'], 'wandb logging.')
flags.DEFINE_string('wandb_project', defaults.wandb_project, 'wandb project.')
flags.DEFINE_bool('progress', True, 'Show progress bars.')
DEFAULT_AGENT_FILE = 'agents/drol.py'


def define_agent_flag() -> None:
    """``--agent`` (and its ``--agent.*`` overrides), or one error line if they are unusable.

    ml_collections applies the command line's overrides to the default file while the flag is
    defined, so a misspelt ``--agent.name`` fails here, before ``main``.
    """
    try:
        config_flags.DEFINE_config_file(
            'agent', DEFAULT_AGENT_FILE, 'Agent file (defines get_config()).', lock_config=False
        )
    except Exception as e:  # noqa: BLE001 - the user's file and overrides, reported in one line.
        fail(agent_flag_problem(sys.argv) or f'--agent could not be loaded: {e}')


def run_config_from_flags() -> train.RunConfig:
    """Collect the run flags into a ``RunConfig``."""
    data = DataOptions(
        dataset_dir=FLAGS.dataset_dir,
        dataset_path=FLAGS.dataset_path,
        generated_dir=FLAGS.generated_dir,
        generate_episodes=FLAGS.generate_episodes,
        generate_seed=FLAGS.dataset_seed,
        generate_workers=FLAGS.generate_workers,
        download=FLAGS.download,
        progress=FLAGS.progress,
    )
    fields = {f for f in train.RunConfig.__dataclass_fields__ if f != 'data'}
    return train.RunConfig(data=data, **{f: getattr(FLAGS, f) for f in fields})


def explicit_overrides(config) -> dict:
    """The ``--agent.<name>=...`` values given on the command line (they beat the preset)."""
    names = {n.split('.', 1)[1].split('.')[0] for n in FLAGS if n.startswith('agent.')}
    present = [n for n in names if FLAGS[f'agent.{n}'].present]
    return {name: config[name] for name in sorted(present)}


@reports_user_errors
def train_from_flags() -> None:
    """Run training from the parsed flags."""
    agent_config = load_agent_config()
    agent = load_agent_file(FLAGS['agent'].config_filename, agent_config.get('agent_name'))
    # Only this program's flags (absl and jax register many of their own).
    flag_values = {f.name: f.value for f in FLAGS.get_flags_for_module(sys.argv[0])}
    flag_values['agent_file'] = agent.path
    overrides = explicit_overrides(agent_config)
    train.run(run_config_from_flags(), agent, agent_config, overrides, flags=flag_values)


def main(_):
    """Run training; user errors end in one line and exit status 2."""
    sys.exit(train_from_flags())


def load_agent_config():
    """The ``--agent`` file's config with the ``--agent.*`` overrides applied.

    ml_collections loads the file and applies the overrides lazily, on first access, so a
    misspelt hyperparameter surfaces here.
    """
    try:
        config = FLAGS.agent
        config.get('agent_name')
        return config
    except Exception as e:  # noqa: BLE001 - any failure of the user's file or overrides.
        message = agent_flag_problem(sys.argv) or f'--agent file could not be loaded: {e}'
        raise AgentFileError(message.strip().splitlines()[0]) from e


def agent_flag_problem(argv: list[str]) -> str | None:
    """Why the ``--agent`` file or an ``--agent.*`` override cannot be used, if it can't.

    ml_collections reports both as 'Failed loading config file', which blames the file even
    for a misspelt hyperparameter; this names the actual problem.
    """
    path, names = DEFAULT_AGENT_FILE, []
    for arg in argv[1:]:
        if arg.startswith('--agent='):
            path = arg.split('=', 1)[1]
        elif arg.startswith('--agent.'):
            names.append(arg[len('--agent.') :].split('=', 1)[0])
    try:
        config = import_module(path).get_config()
        check_known(names, config.keys())
    except UserError as e:
        return str(e)
    return None


def parse_flags(argv: list[str]) -> list[str]:
    """Parse flags; a bad flag or an unusable --agent file is a one-line error (status 2)."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        message = str(e)
    except Exception as e:  # noqa: BLE001 - ml_collections runs the --agent file while parsing.
        message = agent_flag_problem(argv) or f'--agent file could not be loaded: {e}'
    fail(message)


def quiet_startup_noise() -> None:
    """Hide jax's 'Unable to initialize backend' lines: probing absent TPUs is not news."""
    logging.getLogger('jax._src.xla_bridge').setLevel(logging.ERROR)
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


define_agent_flag()

if __name__ == '__main__':
    quiet_startup_noise()
    app.run(main, flags_parser=parse_flags)
