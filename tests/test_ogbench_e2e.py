"""main.py on a real OGBench task, offline: regenerate a tiny dataset, train, evaluate, save."""

import json

import pytest
from test_main import TINY, read_csv_rows, run_main


@pytest.fixture(scope='module')
def offline_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp('ogbench')
    return {
        'cache': root / 'empty_ogbench_cache',
        'generated': root / 'generated',
        'runs': root / 'runs',
    }


@pytest.mark.parametrize('agent', ['drol', 'fql'])
def test_cube_single_offline_end_to_end(agent, offline_dirs):
    result = run_main(
        f'--agent=agents/{agent}.py',
        '--env_name=cube-single',
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
        '--video_episodes=1',
        f'--save_dir={offline_dirs["runs"]}',
        '--run_group=e2e',
        *TINY,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'cube-single' -> 'cube-single-play-singletask-v0'" in result.stdout
    run_dir = offline_dirs['runs'] / 'e2e' / 'cube-single-play-singletask-v0' / agent / 'seed0'
    header, rows = read_csv_rows(run_dir / 'eval.csv')
    assert {'evaluation/success', 'evaluation/episode.return', 'evaluation/episode.length'} <= set(
        header
    )
    assert [r.split(',')[0] for r in rows] == ['1', '30']
    assert (run_dir / 'checkpoint_30.msgpack').exists()
    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['dataset']['source'] == 'generated'  # Never mistaken for the published data.
    flags = json.loads((run_dir / 'flags.json').read_text())
    assert (
        flags['dataset']['source'] == 'generated' and flags['requested_env_name'] == 'cube-single'
    )
