"""The env registry and what all families share: task families, shape checks, data flags."""

import dataclasses
import functools
import os
import subprocess
import sys

import pytest

from drol_jax.data import random_transitions
from drol_jax.envs import registry, toy
from drol_jax.envs.base import DataOptions, EnvBundle
from drol_jax.errors import ConfigError, DatasetError
from drol_jax.run_flags import RunConfig, check_run_config, from_absl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_resolved_env_names_its_task_family():
    resolved = registry.resolve('toy-multimodal-1d')
    assert resolved.family is toy.FAMILY and resolved.task_family == 'toy-multimodal-1d'
    assert [f.name for f in dataclasses.fields(resolved)] == ['name', 'family', 'task_family']


class _StubFamily:
    """A family whose data does not fit its env (2-D observations, 2-D actions)."""

    name = 'stub'

    def __init__(self, obs_dim, action_dim):
        self.shapes = (obs_dim, action_dim)

    def load(self, env_name, options):
        return EnvBundle(
            env_name=env_name,
            make_env=functools.partial(toy.ToyEnv, 'toy-multimodal'),
            train_dataset=random_transitions(8, *self.shapes),
            val_dataset=None,
            provenance={'source': 'stub', 'path': '/data/stub.npz'},
        )


def test_registry_rejects_data_that_does_not_fit_the_env():
    fits = registry.ResolvedEnv('stub-v0', _StubFamily(2, 2), 'stub')
    assert registry.load(fits, DataOptions()).env_name == 'stub-v0'
    wrong = registry.ResolvedEnv('stub-v0', _StubFamily(2, 5), 'stub')
    with pytest.raises(DatasetError) as info:
        registry.load(wrong, DataOptions())
    assert str(info.value) == (
        'The dataset /data/stub.npz has actions of shape (5,) where the environment has (2,): '
        'it is not data of stub-v0 (check --dataset_path and --env_name).'
    )


@pytest.mark.parametrize(
    'field, value, message',
    [
        ('dataset_seed', -1, '--dataset_seed must be >= 0, got -1.'),
        ('generate_episodes', 0, '--generate_episodes must be >= 1, got 0.'),
        ('generate_workers', -2, '--generate_workers must be >= 1, got -2.'),
    ],
)
def test_data_flags_reject_impossible_values(field, value, message):
    with pytest.raises(ConfigError) as info:
        check_run_config(RunConfig(**{field: value}))
    assert str(info.value) == message


def test_the_toy_tasks_refuse_a_dataset_path():
    resolved = registry.resolve('toy-multimodal')
    with pytest.raises(ConfigError, match='--dataset_path=/d.npz does not apply to the toy tasks'):
        registry.check_options(resolved, DataOptions(dataset_path='/d.npz'))
    registry.check_options(resolved, DataOptions())


@pytest.fixture
def main_flags():
    """Parse main.py's flags in this process; undone afterwards."""
    import main

    def parse(*args):
        main.FLAGS.unparse_flags()
        main.FLAGS(['main.py', f'--agent={REPO}/agents/drol.py', *args])
        return from_absl(main.FLAGS)[0]

    yield parse
    main.FLAGS.unparse_flags()


def test_run_seed_does_not_choose_the_dataset(main_flags):
    first, second = main_flags('--seed=0'), main_flags('--seed=1')
    # Same DataOptions, hence the same regenerated dataset and cache folder for every seed.
    assert (first.seed, second.seed) == (0, 1) and first.data == second.data
    assert first.data.dataset_seed == 0
    assert main_flags('--seed=1', '--dataset_seed=3').data.dataset_seed == 3
    assert main_flags('--progress=false').data.progress is False


@pytest.mark.slow
def test_making_an_ogbench_env_prints_nothing():
    # Inside absl's app.run, as main.py is, so absl's INFO logging is live too.
    code = (
        'from absl import app\n'
        'from drol_jax.envs import ogbench\n'
        'def main(_):\n'
        "    env = ogbench.make_eval_env('cube-single-play-singletask-v0')\n"
        '    env.reset(seed=0)\n'
        '    env.step(env.action_space.sample())\n'
        '    env.close()\n'
        'app.run(main)\n'
    )
    environ = {k: v for k, v in os.environ.items() if k not in ('DISPLAY', 'PYTHONWARNINGS')}
    result = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, env=environ
    )
    assert result.returncode == 0 and result.stderr == ''
