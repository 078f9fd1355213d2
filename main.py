"""Train an agent file on an offline-RL task.

Example: ``python main.py --agent=agents/drol.py --env_name=cube-single``.

Defines the run flags (declared in ``drol_jax.run_flags``) and ``--agent``, resolves them into
``Settings`` and hands those to ``drol_jax.train.run``. User mistakes print one ``error:`` line
and exit with status 2; SIGTERM or SIGINT before training starts prints one line and exits with
128 + signum (during training the run checkpoints and exits 0).
"""

import sys

from drol_jax import stopping

if __name__ == '__main__':
    # First of all: a signal during the imports below (JAX, the agent file) ends cleanly too.
    stopping.exit_quietly_before_training()

# The imports follow the handler on purpose (pyproject.toml exempts this file from E402).
import logging
import os

from absl import app, flags
from ml_collections import config_flags

from drol_jax import run_flags, train
from drol_jax.agent_file import import_module, load_agent_file
from drol_jax.cli import fail, reports_user_errors
from drol_jax.errors import AgentFileError, Interrupted, UserError
from drol_jax.hyperparameters import check_known
from drol_jax.settings import resolve

FLAGS = flags.FLAGS
DEFAULT_AGENT_FILE = 'agents/drol.py'
# absl names the script's own flags after sys.argv[0]; --help lists those.
run_flags.define_absl_flags(FLAGS, sys.argv[0] if __name__ == '__main__' else __name__)


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


def explicit_overrides(config) -> dict:
    """The ``--agent.<name>=...`` values given on the command line (they beat the preset)."""
    names = {n.split('.', 1)[1].split('.')[0] for n in FLAGS if n.startswith('agent.')}
    present = [n for n in names if FLAGS[f'agent.{n}'].present]
    return {name: config[name] for name in sorted(present)}


@reports_user_errors
def train_from_flags() -> int:
    """Resolve the parsed flags into settings and train; a stop before training is 128+signum."""
    try:
        agent_config = load_agent_config()
        agent = load_agent_file(FLAGS['agent'].config_filename, agent_config.get('agent_name'))
        run, given = run_flags.from_absl(FLAGS)
        train.run(resolve(run, agent, explicit_overrides(agent_config), given_flags=given))
    except Interrupted as stopped:  # E.g. during dataset regeneration.
        print(f'Stopped: {stopped}', file=sys.stderr, flush=True)
        return 128 + stopped.signum
    return 0


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
