"""main.py on D4RL names through tiny local Minari datasets (AntMaze maze and AdroitHandPen)."""

import json
import os

import pytest
from helpers import TINY, read_csv_rows, run_main
from minari_fixtures import make_tiny_minari_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def minari_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('minari')
    make_tiny_minari_dataset(root, 'D4RL/antmaze/umaze-v1', eval_max_episode_steps=20)
    make_tiny_minari_dataset(root, 'D4RL/pen/human-v2', eval_max_episode_steps=20)
    return root


@pytest.mark.parametrize(
    ('agent', 'env_name', 'canonical'),
    [
        ('drol', 'antmaze-umaze-v2', 'antmaze-umaze-v2'),
        ('fql', 'D4RL/pen/human-v2', 'pen-human-v1'),
    ],
)
def test_main_on_minari_datasets(agent, env_name, canonical, minari_root, tmp_path, monkeypatch):
    monkeypatch.setenv('MINARI_DATASETS_PATH', str(minari_root))
    result = run_main(
        f'--agent=agents/{agent}.py',
        f'--env_name={env_name}',
        '--offline_steps=20',
        '--log_interval=10',
        '--eval_interval=20',
        '--save_interval=20',
        '--eval_episodes=2',
        f'--save_dir={tmp_path}',
        '--run_group=d4rl',
        *TINY,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / 'd4rl' / canonical / agent / 'seed0'
    header, rows = read_csv_rows(run_dir / 'eval.csv')
    assert 'evaluation/normalized_return' in header and 'evaluation/success' in header
    assert [r.split(',')[0] for r in rows] == ['1', '20']
    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['dataset']['source'] == 'minari' and summary['complete']
    assert os.path.exists(run_dir / 'checkpoint_20.msgpack')
