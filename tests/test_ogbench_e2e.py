"""main.py on a real OGBench task, offline: regenerate a tiny dataset, train, evaluate, save."""

import json

import pytest
from helpers import TINY, read_csv_rows, run_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def offline_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp('ogbench')
    return {
        'cache': root / 'empty_ogbench_cache',
        'generated': root / 'generated',
        'runs': root / 'runs',
    }


@pytest.mark.parametrize(('agent', 'seed'), [('drol', 0), ('fql', 1)])
def test_cube_single_offline_end_to_end(agent, seed, offline_dirs):
    result = run_main(
        f'--agent=agents/{agent}.py',
        '--env_name=cube-single',
        f'--seed={seed}',
        '--download=false',
        f'--dataset_dir={offline_dirs["cache"]}',
        f'--generated_dir={offline_dirs["generated"]}',
        '--generate_episodes=2',
        '--generate_workers=1',
        '--offline_steps=30',
        '--log_interval=15',
        '--eval_interval=30',
        '--save_interval=30',
        '--eval_episodes=1',
        f'--save_dir={offline_dirs["runs"]}',
        '--run_group=e2e',
        *TINY,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'cube-single' -> 'cube-single-play-singletask-v0'" in result.stdout
    assert 'Dataset: generated ' in result.stdout
    run_dir = (
        offline_dirs['runs'] / 'e2e' / 'cube-single-play-singletask-v0' / agent / f'seed{seed}'
    )
    header, rows = read_csv_rows(run_dir / 'eval.csv')
    assert {'evaluation/success', 'evaluation/episode.return', 'evaluation/episode.length'} <= set(
        header
    )
    assert [r.split(',')[0] for r in rows] == ['1', '30']
    assert (run_dir / 'checkpoint_30.msgpack').exists()
    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['dataset']['source'] == 'generated'  # Never mistaken for the published data.
    # Every run seed trains on the dataset of --dataset_seed (0).
    assert '-seed0' in summary['dataset']['path'] and summary['dataset']['generation']['seed'] == 0
    flags = json.loads((run_dir / 'flags.json').read_text())
    assert (
        flags['dataset']['source'] == 'generated' and flags['requested_env_name'] == 'cube-single'
    )
