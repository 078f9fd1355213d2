"""Train an agent file on an offline-RL task.

Example: ``python main.py --agent=agents/drol.py --env_name=cube-single``.

Parses flags, loads the agent class from the ``--agent`` file and hands everything to
``drol_jax.train.run``. User mistakes print one line and exit with status 2.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from drol_jax import train
from drol_jax.agent_loading import load_agent_class
from drol_jax.envs.base import DataOptions
from drol_jax.errors import AgentFileError, UserError

FLAGS = flags.FLAGS
defaults = train.RunConfig()

flags.DEFINE_string(
    'env_name', defaults.env_name, 'Task: OGBench/D4RL name, short alias, or toy-*.'
)
flags.DEFINE_integer('seed', defaults.seed, 'Random seed (first seed with --num_seeds).')
flags.DEFINE_integer('num_seeds', defaults.num_seeds, 'Seeds trained together in one process.')
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
flags.DEFINE_bool('download', True, 'Try the dataset server before regenerating.')
flags.DEFINE_enum('wandb_mode', 'disabled', ['disabled', 'online', 'offline'], 'wandb logging.')
flags.DEFINE_string('wandb_project', defaults.wandb_project, 'wandb project.')
flags.DEFINE_bool('progress', True, 'Show progress bars.')
config_flags.DEFINE_config_file(
    'agent', 'agents/drol.py', 'Agent file (defines get_config()).', lock_config=False
)


def run_config_from_flags() -> train.RunConfig:
    """Collect the run flags into a ``RunConfig``."""
    data = DataOptions(
        dataset_dir=FLAGS.dataset_dir,
        dataset_path=FLAGS.dataset_path,
        generated_dir=FLAGS.generated_dir,
        generate_episodes=FLAGS.generate_episodes,
        generate_seed=FLAGS.seed,
        generate_workers=FLAGS.generate_workers,
        download=FLAGS.download,
    )
    fields = {f for f in train.RunConfig.__dataclass_fields__ if f != 'data'}
    return train.RunConfig(data=data, **{f: getattr(FLAGS, f) for f in fields})


def load_agent_config():
    """The ``--agent`` file's ``get_config()`` with overrides, or a one-line ``AgentFileError``."""
    path = FLAGS['agent'].config_filename
    if not os.path.isfile(path):
        raise AgentFileError(f'--agent file {path!r} does not exist.')
    try:
        config = FLAGS.agent
        config.get('agent_name')  # ml_collections loads the file lazily, on first use.
        return config
    except (OSError, AttributeError) as e:
        reason = str(e.__cause__ or e).strip().splitlines()[0]
        raise AgentFileError(f'--agent file {path!r} has no usable get_config(): {reason}') from e


def main(_):
    """Run training; print user errors as one line."""
    try:
        agent_config = load_agent_config()
        agent_class = load_agent_class(
            FLAGS['agent'].config_filename, agent_config.get('agent_name')
        )
        # Only this program's flags (absl and jax register many of their own).
        flag_values = {f.name: f.value for f in FLAGS.get_flags_for_module(sys.argv[0])}
        flag_values['agent'] = agent_config.to_dict()
        flag_values['agent_file'] = os.path.abspath(FLAGS['agent'].config_filename)
        train.run(run_config_from_flags(), agent_class, agent_config, flags=flag_values)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """Parse flags; a bad flag or an unloadable --agent file is a one-line error (status 2)."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        message = str(e)
    except Exception as e:  # noqa: BLE001 - ml_collections runs the --agent file while parsing.
        message = f'--agent file could not be loaded: {type(e).__name__}: {e}'
    print(f'error: {message.strip().splitlines()[0]}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
    app.run(main, flags_parser=parse_flags)
