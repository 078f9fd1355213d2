"""The training run: resume equals uninterrupted, preemption, non-finite stop, seeds (issue 3-4)."""

import csv
import dataclasses
import os
import signal
import subprocess
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import small_config
from test_main import REPO, TINY

from agents.drol import DROLAgent, get_config
from drol_jax import checkpoints
from drol_jax.errors import NonFiniteLossError, UserError
from drol_jax.train import RunConfig, run


def toy_run_config(save_dir, **overrides):
    base = RunConfig(
        env_name='toy-multimodal',
        save_dir=str(save_dir),
        run_group='t',
        offline_steps=40,
        log_interval=10,
        eval_interval=20,
        save_interval=20,
        eval_episodes=4,
        progress=False,
    )
    return dataclasses.replace(base, **overrides)


def tiny_drol():
    return small_config(
        get_config(), actor_hidden_dims=(32, 32), value_hidden_dims=(32, 32), batch_size=32
    )


def rows(path, drop_prefix='time/'):
    with open(path) as f:
        return [
            {k: v for k, v in r.items() if not k.startswith(drop_prefix)} for r in csv.DictReader(f)
        ]


def count_lines(path):
    with open(path) as f:
        return len(f.readlines())


def run_dir(save_dir, seed=0, agent='drol'):
    return os.path.join(save_dir, 't', 'toy-multimodal', agent, f'seed{seed}')


def test_stop_and_resume_equals_uninterrupted(tmp_path):
    whole, parts = tmp_path / 'whole', tmp_path / 'parts'
    run(toy_run_config(whole), DROLAgent, tiny_drol())
    run(toy_run_config(parts, offline_steps=20), DROLAgent, tiny_drol())
    summary = run(toy_run_config(parts, resume=True), DROLAgent, tiny_drol())[0]
    assert summary['complete'] and summary['step'] == 40
    for name in ('train.csv', 'eval.csv'):
        expected = rows(os.path.join(run_dir(whole), name))
        assert [r['step'] for r in expected] == (
            ['10', '20', '30', '40'] if name == 'train.csv' else ['1', '20', '40']
        )
        assert rows(os.path.join(run_dir(parts), name)) == expected, name


def test_existing_run_is_not_overwritten_and_resume_needs_a_checkpoint(tmp_path):
    run(toy_run_config(tmp_path, offline_steps=10, eval_interval=0), DROLAgent, tiny_drol())
    with pytest.raises(UserError, match='already holds a run'):
        run(toy_run_config(tmp_path, offline_steps=10, eval_interval=0), DROLAgent, tiny_drol())
    with pytest.raises(UserError, match='no checkpoint'):
        run(toy_run_config(tmp_path / 'other', resume=True), DROLAgent, tiny_drol())


class ExplodingAgent(DROLAgent):
    """DROL whose reported actor loss turns NaN from its 6th update on."""

    @jax.jit
    def update(self, batch):
        agent, info = DROLAgent.update(self, batch)
        broken = jnp.where(agent.network.step >= 6, jnp.nan, info['actor/bc_loss'])
        return agent, {**info, 'actor/bc_loss': broken}


def test_nonfinite_loss_stops_with_step_metric_and_keeps_last_good_checkpoint(tmp_path):
    cfg = toy_run_config(
        tmp_path, offline_steps=40, save_interval=4, log_interval=4, eval_interval=0
    )
    with pytest.raises(NonFiniteLossError, match=r'training/actor/bc_loss at step 6 .*step 4'):
        run(cfg, ExplodingAgent, tiny_drol())
    assert checkpoints.saved_steps(run_dir(tmp_path)) == [4]


@pytest.fixture(scope='module')
def single_seed_rows(tmp_path_factory):
    """train.csv rows of seeds 0, 1, 2 each trained alone for 30 updates."""
    root = tmp_path_factory.mktemp('single')
    result = {}
    for seed in range(3):
        run(
            toy_run_config(root, offline_steps=30, eval_interval=0, seed=seed),
            DROLAgent,
            tiny_drol(),
        )
        result[seed] = rows(os.path.join(run_dir(root, seed), 'train.csv'))
    return result


def assert_same_as_single(multi_dir, single_seed_rows):
    for seed in range(3):
        got = rows(os.path.join(run_dir(multi_dir, seed), 'train.csv'))
        want = single_seed_rows[seed]
        assert [r['step'] for r in got] == [r['step'] for r in want] == ['10', '20', '30']
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(
                [float(a[k]) for k in sorted(a)],
                [float(b[k]) for k in sorted(a)],
                rtol=2e-4,
                atol=1e-5,
            )


def test_several_seeds_in_one_process_equal_single_seed_runs(tmp_path, single_seed_rows):
    cfg = toy_run_config(tmp_path, offline_steps=30, eval_interval=0, num_seeds=3)
    run(cfg, DROLAgent, tiny_drol())
    assert_same_as_single(tmp_path, single_seed_rows)


def test_online_finetuning_runs(tmp_path):
    cfg = toy_run_config(
        tmp_path,
        offline_steps=10,
        online_steps=20,
        balanced_sampling=True,
        eval_interval=15,
        save_interval=30,
        buffer_size=100,
    )
    summary = run(cfg, DROLAgent, tiny_drol())[0]
    assert summary['complete'] and summary['step'] == 30
    restored = checkpoints.load(
        checkpoints.checkpoint_path(run_dir(tmp_path), 30),
        {'agents': None, 'sampler_keys': None, 'step': 0, 'replay': None},
    )
    assert restored['replay']['size'] == 20


def test_sigterm_saves_a_loadable_checkpoint_and_exits_cleanly(tmp_path):
    args = [
        sys.executable,
        os.path.join(REPO, 'main.py'),
        '--agent=agents/drol.py',
        '--env_name=toy-multimodal',
        '--offline_steps=1000000',
        '--log_interval=5',
        '--eval_interval=0',
        '--save_interval=1000000',
        f'--save_dir={tmp_path}',
        '--run_group=t',
        '--progress=false',
        *TINY,
    ]
    process = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    train_csv = os.path.join(run_dir(tmp_path), 'train.csv')
    deadline = time.time() + 240
    while not (os.path.exists(train_csv) and count_lines(train_csv) >= 3):
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-2000:]
    assert 'Received SIGTERM' in out
    steps = checkpoints.saved_steps(run_dir(tmp_path))
    assert len(steps) == 1 and steps[0] % 5 == 0
    agent = DROLAgent.create(
        0, np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32), tiny_drol()
    )
    agents = jax.tree_util.tree_map(lambda x: jnp.stack([x]), agent)
    restored = checkpoints.load(
        checkpoints.checkpoint_path(run_dir(tmp_path), steps[0]),
        {'agents': agents, 'sampler_keys': jnp.zeros((1, 2), jnp.uint32), 'step': 0},
    )
    assert int(restored['step']) == steps[0]
    assert int(restored['agents'].network.step[0]) == steps[0]
    assert flax.serialization.to_state_dict(restored['agents'])  # A full agent came back.


def test_seeds_shard_over_two_simulated_devices(tmp_path, single_seed_rows):
    """Same comparison in a process with 2 CPU devices: 3 seeds sharded over both (padded to 4)."""
    script = f"""
import jax, sys
sys.path[:0] = [{REPO!r}, {os.path.join(REPO, 'tests')!r}]
from test_run import toy_run_config, tiny_drol
from drol_jax.train import run, seed_mesh
from agents.drol import DROLAgent
assert jax.local_device_count() == 2 and seed_mesh(3).size == 2
cfg = toy_run_config({str(tmp_path)!r}, offline_steps=30, eval_interval=0, num_seeds=3)
run(cfg, DROLAgent, tiny_drol())
"""
    env = {
        **os.environ,
        'XLA_FLAGS': '--xla_force_host_platform_device_count=2',
        'JAX_PLATFORMS': 'cpu',
    }
    result = subprocess.run(
        [sys.executable, '-c', script], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_as_single(tmp_path, single_seed_rows)


def test_restore_path_loads_parameters_from_ours_and_fql_pickles(tmp_path):
    import pickle

    from drol_jax.envs import registry
    from drol_jax.train import Run

    run(toy_run_config(tmp_path / 'src', offline_steps=20, eval_interval=0), DROLAgent, tiny_drol())
    source = run_dir(tmp_path / 'src')
    trained = checkpoints.restore_agent(
        DROLAgent.create(
            5, np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32), tiny_drol()
        ),
        source,
        20,
    )
    assert int(trained.network.step) == 20
    with open(os.path.join(tmp_path, 'params_7.pkl'), 'wb') as f:
        pickle.dump({'agent': flax.serialization.to_state_dict(trained)}, f)

    bundle = registry.load(registry.resolve('toy-multimodal'), None)
    for path, epoch in ((source, 20), (str(tmp_path), 7)):
        cfg = toy_run_config(tmp_path / 'dst', restore_path=path, restore_epoch=epoch)
        agents = Run(cfg, DROLAgent, tiny_drol(), bundle, {}).create_agents()
        restored = jax.tree_util.tree_map(lambda x: x[0], agents)
        jax.tree_util.tree_map(
            np.testing.assert_array_equal, restored.network.params, trained.network.params
        )
