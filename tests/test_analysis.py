"""Tests for drol_jax.analysis: the pure routing/handoff computations and the three figures.

The figure commands run on tiny networks and short training; their numbers are asserted, not
just the files.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from drol_jax.analysis import common, k_scaling, runtime, voronoi
from drol_jax.analysis.__main__ import build_parser, main, settings_from

ROOT = Path(__file__).resolve().parent.parent
DROL = str(ROOT / 'agents' / 'drol.py')
FQL = str(ROOT / 'agents' / 'fql.py')
TINY = ['--hidden', '32', '32', '--batch_size', '64']


def run_cli(*args):
    """Run ``python -m drol_jax.analysis ARGS`` in a subprocess; returns its stdout.

    Compiling the fused update blocks dominates these tiny runs, and XLA's backend optimisation
    level 0 compiles them 2-3x faster. XLA flags are read once per process, so the commands run
    in their own process rather than changing the flags of the whole test session.
    """
    flags = f'{os.environ.get("XLA_FLAGS", "")} --xla_backend_optimization_level=0'
    done = subprocess.run(
        [sys.executable, '-m', 'drol_jax.analysis', *args],
        cwd=ROOT,
        env={**os.environ, 'XLA_FLAGS': flags},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope='module')
def helpers():
    return common.load_agent(DROL).routing_helpers()


def read_json(path):
    return json.loads(Path(path).read_text())


def assert_png(path):
    data = Path(path).read_bytes()
    assert data.startswith(b'\x89PNG') and len(data) > 1000


# ---------------------------------------------------------------------------------------------
# Pure computations.


def test_grid_owners_are_nearest_candidate_cells(helpers):
    left_right = voronoi.grid_owners(helpers, [[-0.5, 0.0], [0.5, 0.0]], 4)
    assert left_right.shape == (4, 4)
    assert (left_right[:, :2] == 0).all() and (left_right[:, 2:] == 1).all()
    # Rows follow the second action coordinate (image with origin='lower').
    bottom_top = voronoi.grid_owners(helpers, [[0.0, -0.5], [0.0, 0.5]], 4)
    assert (bottom_top[:2] == 0).all() and (bottom_top[2:] == 1).all()


def test_grid_owners_match_brute_force(helpers):
    rng = np.random.default_rng(0)
    candidates = rng.uniform(-1, 1, (5, 2)).astype(np.float32)
    cells = voronoi.grid_owners(helpers, candidates, 30).ravel()
    grid = voronoi.action_grid(30)
    brute = np.argmin(((grid[:, None] - candidates[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(cells, brute)


def test_handoffs_and_cluster_ownership_when_a_candidate_is_pushed_out(helpers):
    actions = np.array([[-0.5, 0.0], [-0.45, 0.05], [0.5, 0.0], [0.55, -0.05]], np.float32)
    cluster_ids = np.array([0, 0, 1, 1])
    before = np.array([[-0.5, 0.0], [0.5, 0.0]], np.float32)
    after = np.array([[-0.5, 0.0], [-0.9, 0.9]], np.float32)  # Candidate 1 leaves cluster 1.
    owners = np.stack([voronoi.action_owners(helpers, c, actions) for c in (before, before, after)])
    np.testing.assert_array_equal(owners, [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(voronoi.count_handoffs(owners), [0, 2])
    majority = voronoi.cluster_owners(owners, cluster_ids, num_candidates=2)
    np.testing.assert_array_equal(majority, [[0, 1], [0, 1], [0, 0]])
    np.testing.assert_array_equal(
        voronoi.cluster_owner_changes(majority), [[False, False], [False, True]]
    )


def test_state_actions_come_from_the_task_clusters():
    actions, cluster_ids = voronoi.state_actions('toy-multimodal', np.zeros(2), 50, seed=0)
    assert actions.shape == (150, 2) and np.bincount(cluster_ids).tolist() == [50, 50, 50]
    centres = voronoi.TASKS['toy-multimodal'].mode_centers(np.zeros((1, 2), np.float32))[0]
    nearest = np.argmin(((actions[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(nearest, cluster_ids)


def test_routed_bc_and_seed_statistics(helpers):
    candidates = np.array([[[0.0, 0.0], [1.0, 1.0]]], np.float32)
    assert k_scaling.routed_bc(helpers, candidates, np.array([[0.9, 0.9]], np.float32)) == (
        pytest.approx(0.01)
    )
    stats = k_scaling.seed_statistics(np.array([[1.0, 2.0], [3.0, 2.0]]))
    np.testing.assert_allclose(stats['mean'], [2.0, 2.0])
    np.testing.assert_allclose(stats['std'], [np.sqrt(2.0), 0.0])
    assert stats['ci95'][0] > stats['std'][0]  # t quantile with 1 dof is large.


def test_read_bench_markdown_prefers_fused_rows(tmp_path):
    table = tmp_path / 'bench.md'
    table.write_text(
        'Machine: x\n'
        '| agent | mode | K | network | ms/update |\n'
        '|-------|------|---|---------|-----------|\n'
        '| DROL | host | 4 | 4x512, N=256 | 90.0 |\n'
        '| DROL | fused | 4 | 4x512, N=256 | 80.0 |\n'
        '| FQL | fused | - | 4x512, N=256 | 40.0 |\n'
    )
    rows = runtime.read_bench(str(table))
    assert rows == [
        {'agent': 'drol', 'K': 4, 'update_ms': 80.0, 'mode': 'fused'},
        {'agent': 'fql', 'K': None, 'update_ms': 40.0, 'mode': 'fused'},
    ]


def test_flags_fill_the_figure_settings_by_field_name():
    argv = ['voronoi', '--out_dir', 'x', '--agent', 'a.py', '--K', '7', '--state', '0.1', '-0.2']
    args = build_parser().parse_args([*argv, '--hidden', '8', '9', '--q_coef', '2'])
    assert settings_from(args, voronoi.VoronoiSettings) == dataclasses.replace(
        voronoi.VoronoiSettings(),
        agent_path='a.py',
        num_candidates=7,
        state=(0.1, -0.2),
        hidden=(8, 9),
        q_coef=2.0,
    )
    argv = ['runtime', '--out_dir', 'x', '--agent', 'd.py', '--fql_agent', 'f.py', '--ks', '2']
    args = build_parser().parse_args(argv)
    assert settings_from(args, runtime.RuntimeSettings) == dataclasses.replace(
        runtime.RuntimeSettings(), drol_path='d.py', fql_path='f.py', ks=(2,)
    )


def test_voronoi_refuses_an_agent_without_routing_helpers(tmp_path, capsys):
    assert main(['voronoi', '--out_dir', str(tmp_path), '--agent', FQL]) == 2
    assert 'routing helpers' in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The figure commands on tiny settings.


@pytest.mark.slow
def test_k_scaling_bc_falls_and_spread_grows_with_k(tmp_path):
    args = ['k-scaling', '--out_dir', str(tmp_path), '--agent', DROL, '--ks', '1', '8']
    args += ['--steps', '150', '--seeds', '2', '--eval_states', '256', '--eval_draws', '2']
    run_cli(*args, '--spread_latents', '16', *TINY)
    assert_png(tmp_path / 'k_scaling.png')
    result = read_json(tmp_path / 'k_scaling.json')
    assert result['ks'] == [1, 8]
    bc, spread = np.array(result['routed_bc']), np.array(result['spread'])
    assert bc.shape == spread.shape == (2, 2)
    assert (bc[:, 1] < 0.8 * bc[:, 0]).all(), bc  # Per seed: K=8 fits the clusters better.
    assert (spread[:, 1] > spread[:, 0]).all(), spread
    # K=1 cannot beat the single mean action by much.
    assert bc[:, 0].min() > 0.5 * result['mean_regressor_bc']


@pytest.mark.slow
def test_voronoi_records_a_handoff_forced_by_the_critic(tmp_path):
    # BC-only warm-up lets candidates settle on clusters; a large Q weight then pushes them all
    # towards the best cluster, so dataset actions of the other clusters change owner.
    args = ['voronoi', '--out_dir', str(tmp_path), '--agent', DROL, '--K', '3']
    args += ['--warmup_steps', '200', '--steps', '100', '--snapshots', '3', '--q_coef', '10']
    assert 'handoffs' in run_cli(*args, '--grid_size', '40', *TINY)
    assert_png(tmp_path / 'voronoi.png')
    result = read_json(tmp_path / 'voronoi.json')
    owners = np.array(result['owners'])
    assert owners.shape == (3, 300)
    assert result['steps'] == [200, 250, 300]
    np.testing.assert_array_equal(result['handoffs_per_interval'], voronoi.count_handoffs(owners))
    assert result['total_handoffs'] >= 1
    assert np.array(result['candidates']).shape == (3, 3, 2)


@pytest.mark.slow
def test_runtime_measures_drol_and_fql(tmp_path):
    args = ['runtime', '--out_dir', str(tmp_path), '--agent', DROL, '--fql_agent', FQL]
    args += ['--ks', '2', '--size', 'tiny', '--batch_size', '32', '--updates', '3']
    run_cli(*args, '--repeats', '1', '--inference_calls', '3')
    assert_png(tmp_path / 'runtime.png')
    result = read_json(tmp_path / 'runtime.json')
    assert [row['K'] for row in result['drol']] == [2]
    for row in (*result['drol'], result['fql']):
        assert 0 < row['update_ms'] < 1e4 and 0 < row['inference_ms'] < 1e4
