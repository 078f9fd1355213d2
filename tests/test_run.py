"""The training run: resume equals uninterrupted, preemption, non-finite stop, seeds, restore,
what a run prints, and one-line errors before any data is loaded (issues 3-4, 9, 10.6-10.7).

Tests about the run loop itself use a third party's tiny behaviour-cloning agent (compiles in
about a second); tests whose assertion is about a real agent's numbers use DROL.
"""

import contextlib
import csv
import dataclasses
import io
import json
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
from helpers import (
    AGENT_IDS,
    AGENT_PATHS,
    REPO,
    THIRD_PARTY_AGENT,
    TINY,
    agent_file,
    create,
    run_dir,
    small_config,
    toy_run_config,
    write_agent_file,
)

from drol_jax import checkpoints, train
from drol_jax.errors import ConfigError, NonFiniteLossError, UserError
from drol_jax.run_folders import RunFolders
from drol_jax.settings import resolve
from drol_jax.updates import seed_mesh, stack_agents

DROL_PATH = os.path.join(REPO, 'agents', 'drol.py')


def tiny_drol():
    return small_config(
        agent_file(DROL_PATH).default_config(),
        actor_hidden_dims=(32, 32),
        value_hidden_dims=(32, 32),
        batch_size=32,
    )


def drol():
    return agent_file(DROL_PATH)


def run(cfg, agent, config=None, **explicit):
    """Resolve the settings of a run (``config``: the agent config to start from) and train."""
    return train.run(resolve(cfg, agent, explicit, config=config))


@pytest.fixture(scope='module')
def plain_bc(tmp_path_factory):
    """The third-party agent file (no checks, no progress metrics, no published settings)."""
    folder = tmp_path_factory.mktemp('third_party')
    return agent_file(write_agent_file(folder, 'plain_bc.py', THIRD_PARTY_AGENT))


def rows(path, drop_prefix='time/'):
    with open(path) as f:
        return [
            {k: v for k, v in r.items() if not k.startswith(drop_prefix)} for r in csv.DictReader(f)
        ]


def count_lines(path):
    with open(path) as f:
        return len(f.readlines())


# ---------------------------------------------------------------------------------------------
# What a run prints and writes (a third-party agent file: no preset applies).


@pytest.fixture(scope='module')
def plain_run(plain_bc, tmp_path_factory):
    """A 4-step run of the third-party agent, with evaluations at steps 1, 2 and 4."""
    save_dir = tmp_path_factory.mktemp('plain_run')
    cfg = toy_run_config(
        save_dir, offline_steps=4, log_interval=2, eval_interval=2, save_interval=4, eval_episodes=2
    )
    out, err = io.StringIO(), io.StringIO()
    # With progress bars, written to a file as a redirected log is.
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        summaries = run(dataclasses.replace(cfg, progress=True), plain_bc)
    return save_dir, cfg, summaries, out.getvalue(), err.getvalue()


def test_run_prints_settings_one_line_per_evaluation_and_a_closing_line(plain_run):
    save_dir, _, summaries, out, _ = plain_run
    folder = run_dir(save_dir, agent='plainbc')
    lines = out.splitlines()
    settings = [line for line in lines if line.startswith('Settings: ')]
    assert len(settings) == 1 and 'no preset applies' in settings[0], out
    # The data in words, not a dict (issue 14.6).
    assert 'Dataset: toy data, 10,000 transitions made in memory with dataset seed 0.' in lines
    assert sum(line.startswith('Compiled the update block in ') for line in lines) == 1
    evaluations = [line for line in lines if line.startswith('step ')]
    assert [line.split(':')[0] for line in evaluations] == [
        'step 1 seed 0',
        'step 2 seed 0',
        'step 4 seed 0',
    ], out
    assert all('success' in line and 'return' in line for line in evaluations)
    done = [line for line in lines if line.startswith('Done: ')]
    assert len(done) == 1 and done[0].endswith(f'Run folder: {folder}'), out
    assert 'seed 0, 4 steps in' in done[0] and 'final success' in done[0]
    assert summaries[0]['complete'] and summaries[0]['final_eval']['step'] == 4


def test_progress_in_a_log_file_has_no_eta_before_the_speed_is_known_and_no_fragments(plain_run):
    """A 4-step run never measures its speed; the nested evaluation bar stays off (issue 14.6)."""
    *_, err = plain_run
    bar = err.replace('\r', '\n').splitlines()
    training = [line for line in bar if line.startswith('training:')]
    assert training and all('measuring speed' in line and '<' not in line for line in training)
    assert '\x1b[A' not in err and 'evaluation:' not in err, err[-2000:]


def test_the_eta_comes_from_whole_blocks(plain_bc, tmp_path, monkeypatch, capsys):
    """One block of 150 updates is timed whole, not split to time its first 100 (issue 15.3)."""
    lengths = []
    block = train.train_block

    def recorded(run_context, compiled, state, end):
        lengths.append(end - state.step)
        return block(run_context, compiled, state, end)

    monkeypatch.setattr(train, 'train_block', recorded)
    cfg = toy_run_config(
        tmp_path, offline_steps=150, log_interval=150, eval_interval=0, save_interval=0
    )
    run(cfg, plain_bc)
    assert lengths == [150]
    measured = [line for line in capsys.readouterr().out.splitlines() if 'Measured' in line]
    assert len(measured) == 1 and measured[0].endswith(
        '0 more offline updates take about 0 s (evaluation not included).'
    ), measured


def test_progress_states_the_duration_once_enough_updates_are_timed():
    from drol_jax.progress import CALIBRATION_UPDATES, Progress

    progress = Progress(total_steps=1000, offline_steps=1000, enabled=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        progress.open(0)
        progress.timed(CALIBRATION_UPDATES - 1, 1.0, step=CALIBRATION_UPDATES - 1)
        assert progress.bar.bar_format is not None and not out.getvalue()
        progress.timed(200, 2.0, step=200)
        progress.timed(400, 4.0, step=400)
    assert out.getvalue().splitlines() == [
        'Measured 100.0 updates/s: 800 more offline updates take about 8 s (evaluation not '
        'included).'
    ]
    assert progress.bar.bar_format is None  # tqdm's default layout: the ETA shows from now on.


def test_evaluation_acts_with_temperature_zero():
    """As FQL's evaluation (``eval_temperature=0``): Gaussian agents act with their mean."""
    from drol_jax.evaluation import make_policy

    class TemperatureAgent(flax.struct.PyTreeNode):
        scale: jax.Array

        def sample_actions(self, observations, seed=None, temperature=1.0):
            return jnp.full((*observations.shape[:-1], 2), temperature) * self.scale

    policy = make_policy(TemperatureAgent(jnp.ones(())), seed=0, step=0)
    actions = policy(np.zeros((3, 2)), np.arange(3), np.zeros(3, int))
    np.testing.assert_array_equal(actions, np.zeros((3, 2)))


def test_flags_record_the_preset_and_a_third_party_agent_runs_unchanged(plain_run, plain_bc):
    save_dir, *_ = plain_run
    with open(os.path.join(run_dir(save_dir, agent='plainbc'), 'flags.json')) as f:
        flags = json.load(f)
    assert flags['preset'] == 'paper' and flags['preset_values'] == {}
    assert flags['agent_overrides'] == {} and flags['run_label'] == 'plainbc'
    assert flags['agent'] == plain_bc.default_config().to_dict()


def test_existing_run_is_not_overwritten_and_resume_needs_a_checkpoint(plain_run, plain_bc):
    save_dir, cfg, *_ = plain_run
    with pytest.raises(UserError, match='already holds a run'):
        run(cfg, plain_bc, plain_bc.default_config())
    with pytest.raises(UserError, match='no checkpoint'):
        run(toy_run_config(save_dir / 'other', resume=True), plain_bc, plain_bc.default_config())


@pytest.mark.parametrize(
    'path',
    [
        'third-party',
        *(
            pytest.param(p, marks=pytest.mark.slow, id=i)
            for p, i in zip(AGENT_PATHS, AGENT_IDS, strict=True)
        ),
    ],
)
def test_restore_path_loads_parameters_from_ours_and_official_pickles(path, plain_bc, tmp_path):
    import pickle

    from drol_jax.envs import registry

    if path == 'third-party':
        agent, config = plain_bc, plain_bc.default_config()
    else:
        agent = agent_file(path)
        config = small_config(agent.default_config(), actor_hidden_dims=(32, 32))
    name = config['agent_name']
    cfg = toy_run_config(tmp_path / 'src', offline_steps=4, log_interval=2, eval_interval=0)
    run(dataclasses.replace(cfg, save_interval=4), agent, config)
    source = run_dir(tmp_path / 'src', agent=name)
    ex = np.zeros((1, 2), np.float32)
    trained = checkpoints.restore_agent(create(agent.agent_class, config, 5, ex, ex), source, 4)
    assert int(trained.network.step) == 4
    with open(os.path.join(tmp_path, 'params_7.pkl'), 'wb') as f:
        pickle.dump({'agent': flax.serialization.to_state_dict(trained)}, f)

    bundle = registry.load(registry.resolve('toy-multimodal'), None)
    for restore_path, epoch in ((source, 4), (str(tmp_path), 7)):
        cfg = toy_run_config(
            tmp_path / f'dst{epoch}', restore_path=restore_path, restore_epoch=epoch
        )
        folders = RunFolders(cfg.save_dir, cfg.run_group, 'toy-multimodal', name, [0])
        settings = resolve(cfg, agent, config=config)
        state = train.start(train.RunContext(settings, bundle, folders, None, None, seed_mesh(1)))
        restored = jax.tree_util.tree_map(lambda x: x[0], state.agents)
        jax.tree_util.tree_map(
            np.testing.assert_array_equal, restored.network.params, trained.network.params
        )


# ---------------------------------------------------------------------------------------------
# The run's record: inputs never change, --resume guards what the run was (issue 14.3).

# The third-party agent with a published setting for the toy task, a configurable network, and
# a create() that adds to its config as the official FQL agents do.
PRESET_AGENT = (
    THIRD_PARTY_AGENT.replace(
        'lr=1e-3, batch_size=32)', 'lr=1e-3, batch_size=32, hidden_dims=(32,))'
    )
    .replace('ConditionedPolicy((32,),', "ConditionedPolicy(config['hidden_dims'],")
    .replace(
        '        return cls(rng, network,',
        "        config['action_dim'] = ex_actions.shape[-1]\n        return cls(rng, network,",
    )
    + "\nPUBLISHED_SETTINGS = {'paper': {'toy-multimodal': {'lr': 0.01}}}\n"
)


def records(folder):
    with open(os.path.join(folder, 'flags.json')) as f:
        flags = json.load(f)
    resumes = []
    if os.path.exists(os.path.join(folder, 'resumes.json')):
        with open(os.path.join(folder, 'resumes.json')) as f:
            resumes = json.load(f)
    return flags, resumes


@pytest.fixture(scope='module')
def preset_agent(tmp_path_factory):
    return agent_file(write_agent_file(tmp_path_factory.mktemp('preset'), 'pbc.py', PRESET_AGENT))


@pytest.mark.slow
def test_the_run_reads_its_settings_and_changes_no_input(preset_agent, tmp_path):
    config = preset_agent.default_config()
    before = config.to_dict()
    cfg = toy_run_config(tmp_path, offline_steps=2, eval_interval=0, save_interval=2)
    settings = resolve(cfg, preset_agent, config=config)
    frozen = settings.agent_config.to_dict()
    train.run(settings)
    assert config.to_dict() == before and settings.agent_config.to_dict() == frozen
    flags, _ = records(run_dir(tmp_path, agent='plainbc'))
    assert flags['agent']['lr'] == 0.01 and flags['preset_values'] == {'lr': 0.01}
    assert "config['action_dim']" in PRESET_AGENT and 'action_dim' not in flags['agent']


def test_resume_names_every_refused_difference_before_any_data_is_loaded(tmp_path, monkeypatch):
    """The record of a run (no training needed) against changed settings (issue 14.3)."""
    monkeypatch.setattr(train.registry, 'load', None)  # Loading would fail the test.
    cfg = toy_run_config(tmp_path, offline_steps=2)
    recorded = resolve(cfg, drol(), {'bc_coef': 10.0})
    folders = RunFolders(cfg.save_dir, cfg.run_group, 'toy-multimodal', 'drol', [0])
    folders.check_writable()
    folder = folders.folders[0].run_dir
    with open(os.path.join(folder, 'flags.json'), 'w') as f:
        json.dump({**recorded.record(), 'seed': 0}, f)
    open(checkpoints.checkpoint_path(folder, 2), 'wb').close()
    resumed = dataclasses.replace(cfg, resume=True, offline_steps=4, buffer_size=10)
    changed = resolve(resumed, drol(), {'bc_coef': 7, 'actor_hidden_dims': (32,)})
    with pytest.raises(ConfigError) as info:
        folders.check_resume(changed)
    assert str(info.value) == (
        f'--resume: 3 setting(s) differ from the record in {folder}/flags.json: '
        '--buffer_size 2000000 -> 10, --agent.actor_hidden_dims [512, 512, 512, 512] -> [32], '
        '--agent.bc_coef 10.0 -> 7.0. Resume with the recorded values, or add --allow_changes '
        'to continue with these (the change is recorded in resumes.json).'
    )
    allowed = resolve(dataclasses.replace(resumed, allow_changes=True), drol(), {'bc_coef': 7})
    assert folders.check_resume(allowed) == {
        0: {
            'buffer_size': (2000000, 10),
            'agent.bc_coef': (10.0, 7.0),
            'offline_steps': (2, 4),  # Longer: no permission needed, but recorded.
        }
    }


@pytest.mark.slow
def test_resume_refuses_changed_settings_unless_asked_and_records_each_resume(
    preset_agent, tmp_path, monkeypatch
):
    folder = run_dir(tmp_path, agent='plainbc')
    base = toy_run_config(tmp_path, offline_steps=2, eval_interval=0, save_interval=2)
    run(base, preset_agent)
    original, _ = records(folder)

    def resumed(**flags):
        return dataclasses.replace(base, resume=True, **flags)

    loading = train.registry.load

    def no_loading(*args, **kwargs):
        raise AssertionError('the dataset was loaded before the settings were compared')

    monkeypatch.setattr(train.registry, 'load', no_loading)
    with pytest.raises(ConfigError) as refused:
        run(resumed(buffer_size=10), preset_agent, lr=0.02, hidden_dims=(16,))
    message = str(refused.value)
    assert message.startswith(f'--resume: 3 setting(s) differ from the record in {folder}/flags')
    for difference in (
        '--buffer_size 2000000 -> 10',
        '--agent.lr 0.01 -> 0.02',
        '--agent.hidden_dims [32] -> [16]',
        'add --allow_changes',
    ):
        assert difference in message, message
    with pytest.raises(ConfigError, match='--offline_steps 2 -> 1'):  # Shorter is a change too.
        run(resumed(offline_steps=1), preset_agent)
    monkeypatch.setattr(train.registry, 'load', loading)

    # Asked for: the change is made and recorded; flags.json keeps how the run started.
    run(resumed(offline_steps=4, allow_changes=True), preset_agent, lr=0.02)
    # Longer needs no permission; the last resume's settings are the record now.
    summary = run(resumed(offline_steps=6), preset_agent, lr=0.02)[0]
    assert summary['complete'] and summary['step'] == 6
    flags, resumes = records(folder)
    assert flags == original and flags['agent']['lr'] == 0.01 and flags['offline_steps'] == 2
    assert [r['resumed_at_step'] for r in resumes] == [2, 4]
    assert resumes[0]['changes'] == {
        'offline_steps': {'recorded': 2, 'now': 4},
        'agent.lr': {'recorded': 0.01, 'now': 0.02},
    }
    assert resumes[1]['changes'] == {'offline_steps': {'recorded': 4, 'now': 6}}
    assert resumes[1]['settings']['agent']['lr'] == 0.02 and resumes[1]['settings']['seed'] == 0


@pytest.mark.slow
def test_resume_with_other_network_sizes_says_the_checkpoint_does_not_fit(preset_agent, tmp_path):
    cfg = toy_run_config(tmp_path, offline_steps=2, eval_interval=0, save_interval=2)
    run(cfg, preset_agent)
    other = dataclasses.replace(cfg, offline_steps=4, resume=True, allow_changes=True)
    with pytest.raises(UserError) as info:
        run(other, preset_agent, hidden_dims=(16,))
    message = str(info.value)
    assert message.startswith('--resume: checkpoint ') and 'checkpoint_2.msgpack' in message
    assert 'is readable but does not fit this run' in message and 'shape' in message


def test_a_readable_checkpoint_that_does_not_fit_is_not_called_unreadable(plain_bc, tmp_path):
    folders = RunFolders(str(tmp_path), 't', 'toy-multimodal', 'plainbc', [0])
    folders.check_writable()
    ex = np.zeros((1, 2), np.float32)
    agents = stack_agents([create(plain_bc.agent_class, plain_bc.default_config(), 0, ex, ex)])
    keys = jnp.zeros((1, 2), jnp.uint32)
    folders.save(10, {'agents': agents, 'sampler_keys': keys, 'step': 10})
    # The same tree with other sizes, as other network sizes give.
    wider = jax.tree_util.tree_map(lambda x: jnp.zeros((*x.shape, 2), x.dtype), agents)
    target = {'agents': wider, 'sampler_keys': keys, 'step': 0}
    with pytest.raises(UserError) as info:
        folders.load_latest([10], target)
    message = str(info.value)
    assert 'is readable but does not fit this run' in message and 'shape' in message
    assert 'no readable checkpoint' not in message and '\n' not in message


# ---------------------------------------------------------------------------------------------
# Non-finite losses and corrupt checkpoints.


def exploding(plain_bc):
    """The third-party agent whose reported loss turns NaN from its 6th update on."""

    class ExplodingAgent(plain_bc.agent_class):
        @jax.jit
        def update(self, batch):
            agent, info = plain_bc.agent_class.update(self, batch)
            broken = jnp.where(agent.network.step >= 6, jnp.nan, info['actor/bc_loss'])
            return agent, {**info, 'actor/bc_loss': broken}

    return dataclasses.replace(plain_bc, agent_class=ExplodingAgent)


def test_nonfinite_loss_stops_with_step_metric_and_keeps_last_good_checkpoint(plain_bc, tmp_path):
    cfg = toy_run_config(
        tmp_path, offline_steps=40, save_interval=4, log_interval=4, eval_interval=0
    )
    with pytest.raises(NonFiniteLossError, match=r'training/actor/bc_loss at step 6 .*step 4'):
        run(cfg, exploding(plain_bc), plain_bc.default_config())
    assert checkpoints.saved_steps(run_dir(tmp_path, agent='plainbc')) == [4]


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(plain_bc, tmp_path, capsys):
    folders = RunFolders(str(tmp_path), 't', 'toy-multimodal', 'plainbc', [0, 1])
    folders.check_writable()
    ex = np.zeros((1, 2), np.float32)
    config = plain_bc.default_config()
    agents = stack_agents([create(plain_bc.agent_class, config, s, ex, ex) for s in (0, 1)])
    for step in (10, 20):
        keys = jnp.full((2, 2), step, jnp.uint32)
        folders.save(step, {'agents': agents, 'sampler_keys': keys, 'step': step})
    # The newest checkpoint of the second seed is damaged: both seeds go back to step 10.
    with open(checkpoints.checkpoint_path(folders.folders[1].run_dir, 20), 'r+b') as f:
        f.truncate(5)
    target = {'agents': agents, 'sampler_keys': jnp.zeros((2, 2), jnp.uint32), 'step': 0}
    step, restored = folders.load_latest(folders.resume_candidates(), target)
    warning = capsys.readouterr().err.splitlines()
    # One line, without the Python source line a warnings.warn would print (issue 14.6).
    assert len(warning) == 1 and warning[0].startswith('warning: cannot load checkpoint'), warning
    assert 'checkpoint_20' in warning[0] and 'Falling back to the previous' in warning[0]
    assert step == 10 and int(restored['step']) == 10
    np.testing.assert_array_equal(restored['sampler_keys'], np.full((2, 2), 10))
    jax.tree_util.tree_map(np.testing.assert_array_equal, restored['agents'], agents)
    with open(checkpoints.checkpoint_path(folders.folders[0].run_dir, 10), 'r+b') as f:
        f.truncate(5)
    with pytest.raises(UserError, match='no readable checkpoint'):
        folders.load_latest(folders.resume_candidates(), target)


def test_resume_after_a_corrupt_latest_checkpoint_continues_from_the_previous(
    plain_bc, tmp_path, capsys
):
    config = plain_bc.default_config
    run(
        toy_run_config(tmp_path, offline_steps=20, eval_interval=0, save_interval=10),
        plain_bc,
        config(),
    )
    folder = run_dir(tmp_path, agent='plainbc')
    assert checkpoints.saved_steps(folder) == [10, 20]
    with open(checkpoints.checkpoint_path(folder, 20), 'r+b') as f:
        f.truncate(100)
    capsys.readouterr()
    resumed = toy_run_config(
        tmp_path, offline_steps=30, eval_interval=0, save_interval=10, resume=True
    )
    summary = run(resumed, plain_bc, config())[0]
    out, err = capsys.readouterr()
    assert f'Resuming {folder} from step 10.' in out
    assert 'checkpoint_20' in err and 'Falling back' in err
    assert summary['complete'] and summary['step'] == 30
    assert [r['step'] for r in rows(os.path.join(folder, 'train.csv'))] == ['10', '20', '30']


# ---------------------------------------------------------------------------------------------
# Bad settings: one line, before any data is loaded.

NO_BATCH_SIZE_AGENT = THIRD_PARTY_AGENT.replace(
    "dict(agent_name='plainbc', lr=1e-3, batch_size=32)", "dict(agent_name='plainbc', lr=1e-3)"
)


@pytest.mark.parametrize(
    ('case', 'expected'),
    [
        ('log_interval', '--log_interval must be >= 1, got 0.'),
        ('seed', '--seed must be >= 0, got -1.'),
        ('preset', "--preset must be one of paper, paper-tuned, paper-online, none, got 'bogus'."),
        ('save_dir_is_a_file', 'is a file, not a folder'),
        ('save_dir_under_a_file', 'is not a writable folder'),
        ('no_batch_size', "the agent config has no 'batch_size' entry"),
        ('bad_hyperparameter', '--agent.num_candidates must be an integer >= 1'),
        ('unknown_env', "Did you mean 'toy-multimodal'"),
    ],
)
def test_bad_settings_are_one_line_errors_before_any_data_is_loaded(
    case, expected, tmp_path, monkeypatch
):
    def no_loading(*args, **kwargs):
        raise AssertionError('the dataset was loaded before the settings were checked')

    monkeypatch.setattr(train.registry, 'load', no_loading)
    agent, config = drol(), tiny_drol()
    cfg = toy_run_config(tmp_path / 'runs')
    if case == 'log_interval':
        cfg = dataclasses.replace(cfg, log_interval=0)
    elif case == 'seed':
        cfg = dataclasses.replace(cfg, seed=-1)
    elif case == 'preset':
        cfg = dataclasses.replace(cfg, preset='bogus')
    elif case == 'save_dir_is_a_file':
        (tmp_path / 'a_file').write_text('x')
        cfg = dataclasses.replace(cfg, save_dir=str(tmp_path / 'a_file'))
    elif case == 'save_dir_under_a_file':
        # Unwritable even for root (chmod is no obstacle to root): a folder below a regular file.
        (tmp_path / 'a_file').write_text('x')
        cfg = dataclasses.replace(cfg, save_dir=str(tmp_path / 'a_file' / 'runs'))
    elif case == 'no_batch_size':
        agent = agent_file(write_agent_file(tmp_path, 'no_batch.py', NO_BATCH_SIZE_AGENT))
        config = agent.default_config()
    elif case == 'bad_hyperparameter':
        config.num_candidates = 0
    elif case == 'unknown_env':
        cfg = dataclasses.replace(cfg, env_name='toy-multimodl')
    with pytest.raises(UserError) as raised:
        run(cfg, agent, config)
    message = str(raised.value)
    assert expected in message and '\n' not in message.strip(), message
    assert not os.path.exists(tmp_path / 'runs' / 't'), 'no run folder for a refused run'


def test_unknown_agent_hyperparameter_suggests_the_closest():
    from drol_jax.hyperparameters import check_known

    with pytest.raises(ConfigError) as raised:
        check_known(['bc_cof'], drol().default_config().keys())
    message = str(raised.value)
    assert message.startswith("unknown agent hyperparameter 'bc_cof' in --agent.bc_cof.")
    assert "Did you mean 'bc_coef'" in message and '\n' not in message


# ---------------------------------------------------------------------------------------------
# DROL runs: resume, several seeds, fine-tuning, preemption (long: slow tier).


@pytest.mark.slow
def test_stop_and_resume_equals_uninterrupted(tmp_path):
    whole, parts = tmp_path / 'whole', tmp_path / 'parts'
    run(toy_run_config(whole), drol(), tiny_drol())
    run(toy_run_config(parts, offline_steps=20), drol(), tiny_drol())
    summary = run(toy_run_config(parts, resume=True), drol(), tiny_drol())[0]
    assert summary['complete'] and summary['step'] == 40
    for name in ('train.csv', 'eval.csv'):
        expected = rows(os.path.join(run_dir(whole), name))
        assert [r['step'] for r in expected] == (
            ['10', '20', '30', '40'] if name == 'train.csv' else ['1', '20', '40']
        )
        assert rows(os.path.join(run_dir(parts), name)) == expected, name


@pytest.fixture(scope='module')
def single_seed_rows(tmp_path_factory):
    """train.csv rows of seeds 0, 1, 2 each trained alone for 30 updates."""
    root = tmp_path_factory.mktemp('single')
    result = {}
    for seed in range(3):
        run(toy_run_config(root, offline_steps=30, eval_interval=0, seed=seed), drol(), tiny_drol())
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


@pytest.mark.slow
def test_several_seeds_in_one_process_equal_single_seed_runs(tmp_path, single_seed_rows):
    cfg = toy_run_config(tmp_path, offline_steps=30, eval_interval=0, num_seeds=3)
    run(cfg, drol(), tiny_drol())
    assert_same_as_single(tmp_path, single_seed_rows)


@pytest.mark.slow
def test_seeds_shard_over_two_simulated_devices(tmp_path, single_seed_rows):
    """Same comparison in a process with 2 CPU devices: 3 seeds sharded over both (padded to 4)."""
    script = f"""
import jax, sys
sys.path[:0] = [{REPO!r}, {os.path.join(REPO, 'tests')!r}]
from helpers import toy_run_config
from test_run import drol, run, tiny_drol
from drol_jax.updates import seed_mesh
assert jax.local_device_count() == 2 and seed_mesh(3).size == 2
cfg = toy_run_config({str(tmp_path)!r}, offline_steps=30, eval_interval=0, num_seeds=3)
run(cfg, drol(), tiny_drol())
"""
    # The session's XLA flags (see conftest.py) plus two host devices.
    flags = f'{os.environ.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count=2'
    env = {**os.environ, 'XLA_FLAGS': flags.strip(), 'JAX_PLATFORMS': 'cpu'}
    result = subprocess.run(
        [sys.executable, '-c', script], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_as_single(tmp_path, single_seed_rows)


@pytest.mark.slow
def test_online_finetuning_runs(tmp_path, monkeypatch):
    cfg = toy_run_config(
        tmp_path,
        offline_steps=10,
        online_steps=20,
        balanced_sampling=True,
        eval_interval=15,
        save_interval=30,
        buffer_size=100,
    )
    stacked = []
    stack = train.stack_agents
    monkeypatch.setattr(train, 'stack_agents', lambda agents: stacked.append(1) or stack(agents))
    summary = run(cfg, drol(), tiny_drol())[0]
    assert summary['complete'] and summary['step'] == 30
    # Stacked at the start, at the online boundaries (steps 15, 20, 30) and at the end; not per
    # environment step (issue 15.3).
    assert len(stacked) == 5
    restored = checkpoints.load(
        checkpoints.checkpoint_path(run_dir(tmp_path), 30),
        {'agents': None, 'sampler_keys': None, 'step': 0, 'replay': None},
    )
    assert restored['replay']['size'] == 20


@pytest.mark.slow
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
    ex = np.zeros((1, 2), np.float32)
    agent = create(drol().agent_class, tiny_drol(), 0, ex, ex)
    agents = jax.tree_util.tree_map(lambda x: jnp.stack([x]), agent)
    restored = checkpoints.load(
        checkpoints.checkpoint_path(run_dir(tmp_path), steps[0]),
        {'agents': agents, 'sampler_keys': jnp.zeros((1, 2), jnp.uint32), 'step': 0},
    )
    assert int(restored['step']) == steps[0]
    assert int(restored['agents'].network.step[0]) == steps[0]
    assert flax.serialization.to_state_dict(restored['agents'])  # A full agent came back.


@pytest.mark.slow
def test_resume_of_a_drol_run_after_a_corrupt_checkpoint_matches_the_uninterrupted_rows(
    tmp_path, capsys
):
    """--resume past a corrupt newest checkpoint still reproduces the uninterrupted run."""
    whole, parts = tmp_path / 'whole', tmp_path / 'parts'
    run(toy_run_config(whole, eval_interval=0, save_interval=10), drol(), tiny_drol())
    run(
        toy_run_config(parts, offline_steps=30, eval_interval=0, save_interval=10),
        drol(),
        tiny_drol(),
    )
    with open(checkpoints.checkpoint_path(run_dir(parts), 30), 'r+b') as f:
        f.truncate(64)
    run(
        toy_run_config(parts, eval_interval=0, save_interval=10, resume=True),
        drol(),
        tiny_drol(),
    )
    assert 'Falling back' in capsys.readouterr().err
    assert rows(os.path.join(run_dir(parts), 'train.csv')) == rows(
        os.path.join(run_dir(whole), 'train.csv')
    )


@pytest.mark.slow
def test_videos_without_rendering_are_one_warning_line(capfd):
    """The render probe's failure (a traceback, GL messages) stays in its child (issue 14.6)."""
    import functools

    from drol_jax.envs import toy
    from drol_jax.evaluation import Evaluator

    evaluator = Evaluator(functools.partial(toy.ToyEnv, 'toy-multimodal'), 1, 1, None, 1)
    assert not evaluator.can_render() and not evaluator.can_render()  # Probed once.
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('warning: video rendering does not work here ('), err
    assert 'NotImplementedError' in err[0] and 'Continuing without videos.' in err[0]
