"""main.py end to end on the toy task: DROL, FQL, a third agent file; clear one-line errors."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    '--agent.actor_hidden_dims=(32,32)',
    '--agent.value_hidden_dims=(32,32)',
    '--agent.batch_size=32',
]

THIRD_AGENT = textwrap.dedent(
    '''
    """A minimal behaviour-cloning agent written against the agent interface only."""
    import flax
    import jax
    import jax.numpy as jnp
    import ml_collections
    import optax

    from drol_jax.networks import ConditionedPolicy
    from drol_jax.train_state import ModuleDict, TrainState, nonpytree_field


    def get_config():
        return ml_collections.ConfigDict(dict(agent_name='plainbc', lr=1e-3, batch_size=32))


    class PlainBCAgent(flax.struct.PyTreeNode):
        rng: jax.Array
        network: TrainState
        config: dict = nonpytree_field()

        @jax.jit
        def total_loss(self, batch, grad_params, rng=None):
            prediction = self.network.select('actor')(batch['observations'], params=grad_params)
            loss = jnp.mean((prediction - batch['actions']) ** 2)
            return loss, {'actor/bc_loss': loss}

        @jax.jit
        def update(self, batch):
            network, info = self.network.apply_loss_fn(lambda p: self.total_loss(batch, p))
            return self.replace(network=network), info

        @jax.jit
        def sample_actions(self, observations, seed=None, temperature=1.0):
            return jnp.clip(self.network.select('actor')(observations), -1, 1)

        @classmethod
        def create(cls, seed, ex_observations, ex_actions, config):
            rng, init_rng = jax.random.split(jax.random.PRNGKey(seed))
            network_def = ModuleDict({'actor': ConditionedPolicy((32,), ex_actions.shape[-1])})
            params = network_def.init(init_rng, actor=(ex_observations,))['params']
            network = TrainState.create(network_def, params, optax.adam(config['lr']))
            return cls(rng, network, flax.core.FrozenDict(**config))
    '''
)


def run_main(*args, cwd=REPO, timeout=300):
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': REPO}
    return subprocess.run(
        [sys.executable, os.path.join(REPO, 'main.py'), '--progress=false', *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_csv_rows(path):
    with open(path) as f:
        lines = f.read().strip().splitlines()
    return lines[0].split(','), lines[1:]


@pytest.mark.parametrize(
    ('agent_file', 'agent_name'),
    [('agents/drol.py', 'drol'), ('agents/fql.py', 'fql'), ('third', 'plainbc')],
)
def test_main_trains_and_evaluates_end_to_end(agent_file, agent_name, tmp_path):
    if agent_file == 'third':
        agent_file = str(tmp_path / 'plain_bc.py')
        with open(agent_file, 'w') as f:
            f.write(THIRD_AGENT)
        extra = []
    else:
        extra = TINY
    result = run_main(
        f'--agent={agent_file}',
        '--env_name=toy-multimodal',
        '--offline_steps=40',
        '--log_interval=20',
        '--eval_interval=20',
        '--save_interval=40',
        '--eval_episodes=5',
        f'--save_dir={tmp_path}',
        '--run_group=e2e',
        *extra,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / 'e2e' / 'toy-multimodal' / agent_name / 'seed0'
    header, rows = read_csv_rows(run_dir / 'eval.csv')
    assert header[0] == 'step' and 'evaluation/episode.return' in header
    assert [r.split(',')[0] for r in rows] == ['1', '20', '40']
    header, rows = read_csv_rows(run_dir / 'train.csv')
    assert [r.split(',')[0] for r in rows] == ['20', '40']
    assert any(h.startswith('training/') for h in header)
    assert (run_dir / 'checkpoint_40.msgpack').exists()
    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['complete'] and summary['dataset']['source'] == 'toy'
    flags = json.loads((run_dir / 'flags.json').read_text())
    assert flags['agent']['agent_name'] == agent_name and flags['env_name'] == 'toy-multimodal'


def one_line_error(result):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert 'Traceback' not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


@pytest.mark.parametrize(
    ('args', 'expected'),
    [
        (['--env_name=cube-singel'], "did you mean 'cube-single'"),
        (['--agent=agents/nope.py'], 'does not exist'),
        (['--agent.num_candidates=0'], 'num_candidates must be an integer >= 1'),
        (['--agent.batch_size=0'], 'batch_size must be an integer >= 1'),
        (['--offline_steps=-5'], 'offline_steps must be >= 0'),
        (['--agent.bc_coef=-1'], 'bc_coef must be >= 0'),
        (['--eval_episodes=-1'], 'eval_episodes must be >= 0'),
    ],
)
def test_bad_input_is_one_clear_line(args, expected, tmp_path):
    full = ['--agent=agents/drol.py', '--env_name=toy-multimodal', f'--save_dir={tmp_path}', *args]
    # A later flag wins in absl, so the case's own --agent/--env_name override the defaults.
    line = one_line_error(run_main(*full, timeout=120))
    assert expected.lower() in line.lower(), line


def test_agent_file_without_interface(tmp_path):
    bad = tmp_path / 'not_an_agent.py'
    bad.write_text(
        'import ml_collections\n\n\ndef get_config():\n'
        "    return ml_collections.ConfigDict(dict(agent_name='x', batch_size=4))\n"
    )
    line = one_line_error(run_main(f'--agent={bad}', '--env_name=toy-multimodal', timeout=120))
    assert 'create, update, total_loss, sample_actions' in line
