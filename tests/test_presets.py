"""Published settings as data in the agent files: ``--preset`` (issue 11.1).

Precedence: agent file defaults < preset < explicit ``--agent.*`` flags. The values are checked
in-process; one slow test runs main.py on cube-single and reads flags.json.
"""

import itertools
import json
import os
import re
from pathlib import Path

import pytest
from helpers import (
    AGENT_PATHS,
    REPO,
    THIRD_PARTY_AGENT,
    agent_file,
    run_main,
    write_agent_file,
)

from drol_jax import presets
from drol_jax.envs import registry
from drol_jax.errors import AgentFileError
from drol_jax.run_flags import RunConfig
from drol_jax.settings import resolve

DROL = os.path.join(REPO, 'agents', 'drol.py')
FQL = os.path.join(REPO, 'agents', 'fql.py')


def applied(path, env_name, preset='paper'):
    """What a run of the agent file on ``env_name`` applies (as train.run looks it up)."""
    file = agent_file(path)
    task_family = registry.resolve(env_name).task_family
    return presets.settings_for(file, file.default_config()['agent_name'], task_family, preset)


def resolved_config(path, env_name, preset='paper', **explicit):
    """The agent config a run would train with: defaults, then the preset, then the flags."""
    run = RunConfig(env_name=env_name, preset=preset)
    return resolve(run, agent_file(path), explicit).agent_config


def test_drol_cube_single_gets_the_published_bc_coef():
    paper = applied(DROL, 'cube-single')
    assert paper.task_family == 'cube-single-play' and paper.label == 'DROL(16)'
    assert paper.values == {'bc_coef': 10.0, 'num_candidates': 16}
    assert paper.note.startswith('preset paper for cube-single-play')
    assert resolved_config(DROL, 'cube-single').bc_coef == 10.0
    # Every task of the family, by any of its names.
    assert applied(DROL, 'cube-single-play-singletask-task3-v0').values == paper.values
    assert presets.run_label(paper, {}) == 'DROL(16)'


def test_explicit_flags_beat_the_preset_and_none_keeps_the_defaults():
    assert resolved_config(DROL, 'cube-single', bc_coef=3.0).bc_coef == 3.0
    assert resolved_config(DROL, 'cube-single', bc_coef=3.0).num_candidates == 16
    default = agent_file(DROL).default_config().bc_coef
    assert default == 1.0
    none = applied(DROL, 'cube-single', 'none')
    assert none.values == {} and resolved_config(DROL, 'cube-single', 'none').bc_coef == default
    settings = resolve(RunConfig(env_name='cube-single', preset='none'), agent_file(DROL), {})
    assert settings.settings_line() == 'preset none: agent defaults.'
    assert settings.record()['preset'] == 'none' and settings.record()['preset_values'] == {}
    # The label names what differs from the published setting, so tables never pool them.
    paper = applied(DROL, 'cube-single')
    assert presets.run_label(paper, {'bc_coef': 3.0}) == 'DROL(16) bc_coef=3.0'
    assert presets.run_label(paper, {'bc_coef': 10.0}) == 'DROL(16)'


def test_drol_star_uses_the_per_family_k():
    tuned = applied(DROL, 'cube-double', 'paper-tuned')
    assert tuned.label == 'DROL*' and tuned.values['num_candidates'] == 64
    assert applied(DROL, 'cube-double').values['num_candidates'] == 16
    assert presets.run_label(tuned, {'num_candidates': 4}) == 'DROL* num_candidates=4'


def test_fql_cube_single_gets_alpha_300():
    paper = applied(FQL, 'cube-single')
    assert paper.values == {'alpha': 300.0} and paper.label == 'FQL'
    assert resolved_config(FQL, 'cube-single').alpha == 300.0
    assert resolved_config(FQL, 'cube-single', alpha=30.0).alpha == 30.0


def test_d4rl_patterns():
    pen = applied(DROL, 'pen-human-v1')
    assert pen.values == {'bc_coef': 1.0, 'num_candidates': 16, 'q_agg': 'min'}
    assert applied(FQL, 'antmaze-medium-play-v2').values == {'alpha': 10.0}
    assert applied(FQL, 'antmaze-large-diverse-v2').values == {'alpha': 3.0}
    assert applied(DROL, 'antmaze-large-diverse-v2', 'paper-tuned').values['bc_coef'] == 0.03


def test_third_party_agent_and_unknown_family_get_no_preset(tmp_path):
    third = agent_file(write_agent_file(tmp_path, 'plain_bc.py', THIRD_PARTY_AGENT))
    for preset in ('paper', 'paper-tuned'):
        result = presets.settings_for(third, 'plainbc', 'cube-single-play', preset)
        assert result.values == {} and result.label == 'plainbc'
        assert result.note.startswith('no preset applies: plainbc publishes no settings')
    toy = applied(DROL, 'toy-multimodal')
    assert toy.values == {} and 'no preset applies' in toy.note and 'toy-multimodal' in toy.note


def test_the_paper_label_names_a_run_even_where_no_setting_applies():
    """A table column is the agent as the paper names it, also for a task with no setting."""
    labels = {
        'drol': ('DROL(16)', 'DROL*'),
        'fql': ('FQL', 'FQL'),
        'iql': ('IQL', 'IQL'),
        'rebrac': ('ReBRAC', 'ReBRAC'),
        'ifql': ('IFQL', 'IFQL'),
        'sac': ('RLPD', 'RLPD'),
    }
    for path in AGENT_PATHS:
        name = agent_file(path).default_config()['agent_name']
        paper, tuned = (applied(path, 'toy-multimodal', p) for p in ('paper', 'paper-tuned'))
        assert paper.values == tuned.values == {} and 'no preset applies' in paper.note
        assert (paper.label, tuned.label) == labels[name]
        assert applied(path, 'toy-multimodal', 'none').label == name  # --preset=none: no label.
    toy = applied(DROL, 'toy-multimodal')
    assert presets.run_label(toy, {'bc_coef': 3.0}) == 'DROL(16) bc_coef=3.0'


def test_a_preset_naming_an_unknown_hyperparameter_is_an_error():
    bogus = presets.AppliedPreset('paper', 'x', {'no_such_setting': 1}, 'X', '')
    with pytest.raises(AgentFileError, match='no_such_setting'):
        presets.apply_preset(agent_file(DROL).default_config(), bogus, {})
    with pytest.raises(AgentFileError, match='--preset must be one of'):
        presets.settings_for(agent_file(DROL), 'drol', 'cube-single-play', 'bogus')


def test_readme_table_equals_the_agent_files(capsys):
    readme = Path(REPO, 'README.md').read_text()
    match = re.search(
        r'<!-- published-settings:start -->\n(.*?)\n?<!-- published-settings:end -->',
        readme,
        re.S,
    )
    assert match, 'README.md lacks the published-settings markers'
    expected = presets.markdown_table([agent_file(p) for p in AGENT_PATHS])
    assert match.group(1).strip() == expected.strip(), (
        'README.md published-settings table is stale: paste the output of '
        '`python -m drol_jax.presets agents/{drol,fql,iql,rebrac,ifql,sac}.py` between the markers.'
    )
    # The command the README names prints the same table.
    assert presets.main(AGENT_PATHS) == 0
    assert capsys.readouterr().out.strip() == expected.strip()


# ---------------------------------------------------------------------------------------------
# main.py on cube-single (a tiny regenerated dataset; no updates: flags.json is written first).


@pytest.fixture(scope='module')
def cube_single(tmp_path_factory):
    root = tmp_path_factory.mktemp('presets_e2e')
    groups = itertools.count()

    def run(agent, *args):
        group = str(next(groups))
        result = run_main(
            f'--agent=agents/{agent}.py',
            '--env_name=cube-single',
            '--download=false',
            f'--dataset_dir={root / "empty_cache"}',
            f'--generated_dir={root / "generated"}',
            '--generate_episodes=2',
            '--generate_workers=1',
            '--offline_steps=0',
            '--eval_interval=0',
            f'--save_dir={root / "runs"}',
            f'--run_group={group}',
            *args,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        folder = root / 'runs' / group / 'cube-single-play-singletask-v0' / agent / 'seed0'
        return json.loads((folder / 'flags.json').read_text()), result.stdout

    return run


@pytest.mark.slow
def test_cube_single_runs_record_their_preset_in_flags(cube_single):
    """main.py to flags.json; --preset=none and FQL's alpha resolve in-process (tests above)."""
    flags, out = cube_single('drol')
    assert flags['preset'] == 'paper' and flags['agent']['bc_coef'] == 10.0
    assert flags['preset_values'] == {'bc_coef': 10.0, 'num_candidates': 16}
    assert flags['agent_overrides'] == {} and flags['run_label'] == 'DROL(16)'
    assert 'Settings: preset paper for cube-single-play' in out

    flags, out = cube_single('drol', '--agent.bc_coef=3')
    assert flags['agent']['bc_coef'] == 3.0 and flags['agent_overrides'] == {'bc_coef': 3.0}
    assert flags['run_label'] == 'DROL(16) bc_coef=3.0'
    # The line shows what the run uses, and where each value came from (issue 14.4).
    assert 'bc_coef=3.0 (explicit; preset 10.0), num_candidates=16 (preset).' in out
