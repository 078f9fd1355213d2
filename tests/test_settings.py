"""Run flags declared once, settings resolved once (issue 15.1-15.2), the Settings line (14.4),
the sweep's jobs resolved as their runs (14.5), and the checks made before anything loads (14.6).

Everything here resolves settings without training, so it is cheap.
"""

import dataclasses
import os
import re
from pathlib import Path

import ml_collections
import pytest
from helpers import REPO, THIRD_PARTY_AGENT, agent_file, write_agent_file

from drol_jax import run_flags
from drol_jax.agent_file import import_module
from drol_jax.errors import AgentFileError, ConfigError, UserError
from drol_jax.run_flags import RUN_FLAGS, RunConfig
from drol_jax.settings import resolve
from drol_jax.sweep import spec

DROL = os.path.join(REPO, 'agents', 'drol.py')


# ---------------------------------------------------------------------------------------------
# One declaration per run flag.


def python_sources():
    """Every Python file of the repository (outside the tests) with its text."""
    root = Path(REPO)
    for path in [root / 'main.py', *root.glob('drol_jax/**/*.py'), *root.glob('sweeps/*.py')]:
        yield path, path.read_text()


def test_each_run_flag_is_declared_once_and_main_defines_exactly_those():
    sources = dict(python_sources())
    for flag in RUN_FLAGS:
        # The help text (what --help shows) is written in one file, once.
        holders = [p.name for p, text in sources.items() if flag.help[:40] in text]
        assert holders == ['run_flags.py'], (flag.name, holders)
        assert sources[Path(REPO, 'drol_jax', 'run_flags.py')].count(f"'{flag.name}',") >= 1
    # No absl definition outside the declarations (main.py keeps only --agent).
    for path, text in sources.items():
        if path.name != 'run_flags.py':
            assert not re.search(r'flags\.DEFINE_(string|integer|bool|float|enum)\(', text), path

    import main

    defined = {flag.name for flag in main.FLAGS.get_flags_for_module(main)}
    assert {flag.name for flag in RUN_FLAGS} <= defined
    assert defined - {flag.name for flag in RUN_FLAGS} <= {'agent'}


def test_run_config_data_options_and_checks_come_from_the_declarations():
    run = RunConfig(dataset_seed=3, progress=False)
    assert [f.name for f in dataclasses.fields(RunConfig)] == [f.name for f in RUN_FLAGS]
    data_flags = [f.name for f in RUN_FLAGS if f.data]
    assert {k: getattr(run.data, k) for k in data_flags} == {k: getattr(run, k) for k in data_flags}
    assert run.data.dataset_seed == 3 and run.data.progress is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.seed = 4
    for field, value, message in [
        ('offline_steps', 1.5, '--offline_steps must be an integer, got 1.5.'),
        ('progress', 'yes', "--progress must be true or false, got 'yes'."),
        (
            'wandb_mode',
            'cloud',
            "--wandb_mode must be one of disabled, online, offline, got 'cloud'.",
        ),
        ('allow_changes', True, '--allow_changes goes with --resume'),
    ]:
        with pytest.raises(ConfigError) as info:
            run_flags.check_run_config(RunConfig(**{field: value}))
        assert str(info.value).startswith(message)


def test_sweep_flag_names_come_from_the_declarations(tmp_path):
    path = tmp_path / 's.py'
    path.write_text(
        "def get_sweep():\n    return {'envs': ['toy-multimodal'], 'agents': ['agents/drol.py'],"
        " 'flags': {'ofline_steps': 1}}\n"
    )
    with pytest.raises(ConfigError, match="'ofline_steps' is not a flag of main.py. Did you mean"):
        spec.load_sweep(str(path))
    assert not hasattr(spec, 'main_flag_names')  # No parsing of main.py's source.


# ---------------------------------------------------------------------------------------------
# Settings: resolved once, frozen, inputs untouched.


def test_explicit_beats_preset_and_the_settings_line_says_which_is_which():
    settings = resolve(RunConfig(env_name='cube-single'), agent_file(DROL), {'bc_coef': 3})
    assert settings.agent_config.bc_coef == 3.0 and settings.agent_config.num_candidates == 16
    line = settings.settings_line()
    assert line.startswith('preset paper for cube-single-play (cube-single-play): ')
    assert 'bc_coef=3.0 (explicit; preset 10.0)' in line and 'num_candidates=16 (preset)' in line
    assert settings.record()['run_label'] == 'DROL(16) bc_coef=3.0'
    assert settings.record()['agent_overrides'] == {'bc_coef': 3.0}
    same = resolve(RunConfig(env_name='cube-single'), agent_file(DROL), {'num_candidates': 16})
    assert 'num_candidates=16 (explicit, as the preset)' in same.settings_line()
    none = resolve(RunConfig(env_name='toy-multimodal'), agent_file(DROL), {'batch_size': 8})
    assert none.settings_line() == (
        "no preset applies: drol has no 'paper' setting for task family 'toy-multimodal'; agent "
        'defaults, except batch_size=8 (explicit).'
    )


def preset_agent(folder):
    """The third-party agent with a published setting for the toy task (lr=0.01)."""
    source = (
        THIRD_PARTY_AGENT + "\nPUBLISHED_SETTINGS = {'paper': {'toy-multimodal': {'lr': 0.01}}}\n"
    )
    return agent_file(write_agent_file(folder, 'plain_bc_preset.py', source))


def test_resolution_copies_its_inputs_and_freezes_the_result(tmp_path):
    agent = preset_agent(tmp_path)
    config = agent.default_config()
    before = config.to_dict()
    settings = resolve(RunConfig(env_name='toy-multimodal'), agent, config=config)
    assert settings.agent_config.lr == 0.01 and config.to_dict() == before
    assert isinstance(settings.agent_config, ml_collections.FrozenConfigDict)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.run = RunConfig()
    with pytest.raises((AttributeError, TypeError)):
        settings.agent_config.lr = 1.0
    with pytest.raises(TypeError):
        settings.explicit['lr'] = 1.0


@pytest.mark.parametrize(
    ('run', 'explicit', 'message'),
    [
        (RunConfig(env_name='toy-multimodal', dataset_path='/data/x.npz'), {}, 'does not apply'),
        (RunConfig(env_name='toy-multimodal'), {'num_candidates': 0}, 'an integer >= 1'),
        (RunConfig(env_name='toy-multimodal'), {'num_candidats': 4}, "Did you mean 'num_can"),
        (RunConfig(env_name='toy-multimodal'), {'bc_coef': 'high'}, '--agent.bc_coef='),
        (RunConfig(env_name='toy-multimodl'), {}, "Did you mean 'toy-multimodal'"),
    ],
)
def test_bad_settings_are_one_line_errors(run, explicit, message):
    with pytest.raises(UserError) as info:
        resolve(run, agent_file(DROL), explicit)
    assert message in str(info.value) and '\n' not in str(info.value).strip()


def test_a_file_that_is_not_python_is_one_clear_error():
    with pytest.raises(AgentFileError, match="README.md' is not a Python file"):
        import_module(os.path.join(REPO, 'README.md'))


# ---------------------------------------------------------------------------------------------
# A sweep's jobs are resolved as their runs.


def toy_sweep(folder, grid):
    path = Path(folder) / 'grid.py'
    body = {'name': 'g', 'envs': ['toy-multimodal'], 'agents': ['agents/drol.py'], 'grid': grid}
    path.write_text(f'def get_sweep():\n    return {body!r}\n')
    return spec.load_sweep(str(path))


def test_dry_run_refuses_a_grid_value_the_run_would_refuse(tmp_path):
    with pytest.raises(ConfigError) as info:
        spec.expand(toy_sweep(tmp_path, {'agent.num_candidates': [0, 4]}), str(tmp_path))
    with pytest.raises(ConfigError) as run_info:  # What the job's run would say.
        resolve(RunConfig(env_name='toy-multimodal'), agent_file(DROL), {'num_candidates': 0})
    assert str(info.value).startswith(f'{run_info.value} (sweep ')
    assert 'num_candidates must be an integer >= 1' in str(run_info.value)
    with pytest.raises(ConfigError, match=r'num_candidats is not a hyperparameter .* Did you mean'):
        spec.expand(toy_sweep(tmp_path, {'agent.num_candidats': [4]}), str(tmp_path))


def test_a_jobs_command_is_written_from_its_settings(tmp_path):
    (job,) = spec.expand(toy_sweep(tmp_path, {'agent.bc_coef': [3]}), str(tmp_path))
    assert job.args[:3] == (
        '--env_name=toy-multimodal',
        '--agent=agents/drol.py',
        '--preset=paper',
    )
    assert '--agent.bc_coef=3.0' in job.args and '--progress=false' in job.args
    assert job.agent_config['bc_coef'] == 3.0 and job.agent_config['num_candidates'] == 16
    assert job.label == 'DROL(16) bc_coef=3.0' and job.total_steps == 1_000_000
