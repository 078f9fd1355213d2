"""Tests for drol_jax.plot: loading both log formats, seed alignment, bootstrap CIs, table, CLI."""

import csv
import json
import logging
import runpy
import sys

import numpy as np
import pytest

from drol_jax.errors import UserError
from drol_jax.plot.cli import choose_metrics, main
from drol_jax.plot.runs import RETURN, SUCCESS, load_runs, natural_key, read_eval_csv
from drol_jax.plot.stats import (
    Estimate,
    SeedCurves,
    aggregate_estimates,
    align_seeds,
    bootstrap_mean_ci,
    final_scores,
    group_curves,
    score_matrices,
)
from drol_jax.plot.tables import ROW_STATISTIC, factor_shared_settings, task_group

STEPS = [0, 100, 200, 300]


def write_run(run_dir, rows, flags=None, header=None, step_last=False):
    """Write an eval.csv (and flags.json when given) into run_dir.

    rows: list of dicts with 'step' and metric keys. step_last puts 'step' at the end of the
    header, as FQL's CsvLogger does.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    if header is None:
        metrics = [k for k in rows[0] if k != 'step']
        header = [*metrics, 'step'] if step_last else ['step', *metrics]
    with open(run_dir / 'eval.csv', 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow([row.get(k, '') for k in header])
    if flags is not None:
        (run_dir / 'flags.json').write_text(json.dumps(flags))


def ours(root, env, agent, seed, success, returns=None, steps=STEPS, run_group='grp'):
    """A run folder in our layout: <root>/<run_group>/<env>/<agent>/seed<k>/."""
    returns = returns if returns is not None else [100 * s for s in success]
    rows = [
        {
            'step': st,
            'evaluation/success': su,
            'evaluation/episode.return': r,
            'evaluation/episode.length': 50,
        }
        for st, su, r in zip(steps, success, returns, strict=True)
    ]
    flags = {'env_name': env, 'seed': seed, 'run_group': run_group, 'agent': {'agent_name': agent}}
    run_dir = root / run_group / env / agent / f'seed{seed}'
    write_run(run_dir, rows, flags)
    return run_dir


def fql(root, env, agent, seed, success, steps=(1, 100, 200, 300), stamp='20250101_000000'):
    """A run folder in FQL's layout: exp/<project>/<run_group>/sd00k_<timestamp>/."""
    rows = [
        {'evaluation/episode.return': 10 * su, 'evaluation/success': su, 'step': st}
        for st, su in zip(steps, success, strict=True)
    ]
    flags = {
        'env_name': env,
        'seed': seed,
        'run_group': 'Debug',
        'offline_steps': 1000000,
        'agent': {'agent_name': agent, 'lr': 0.0003, 'alpha': 10.0},
    }
    run_dir = root / 'exp' / 'fql' / 'Debug' / f'sd{seed:03d}_{stamp}'
    write_run(run_dir, rows, flags, step_last=True)
    return run_dir


# ----------------------------------------------------------------------------- loading


def test_loads_both_formats_and_groups_by_env_and_agent(tmp_path):
    ours(tmp_path / 'runs', 'cube-single', 'drol', 0, [0.0, 0.2, 0.4, 0.6])
    ours(tmp_path / 'runs', 'cube-single', 'drol', 1, [0.0, 0.4, 0.6, 0.8])
    ours(tmp_path / 'runs', 'puzzle-3x3', 'drol', 0, [0.1, 0.1, 0.1, 0.1])
    fql(tmp_path, 'cube-single', 'fql', 0, [0.0, 0.5, 0.5, 1.0])
    fql(tmp_path, 'cube-single', 'fql', 1, [0.0, 0.5, 0.5, 0.0])

    runs = load_runs([str(tmp_path / 'runs/*/*/*/seed*'), str(tmp_path / 'exp/*/*/sd*')])
    curves = group_curves(runs, SUCCESS)

    assert sorted(curves) == [
        ('cube-single', 'drol'),
        ('cube-single', 'fql'),
        ('puzzle-3x3', 'drol'),
    ]
    drol = curves['cube-single', 'drol']
    assert drol.seeds == (0, 1)
    np.testing.assert_array_equal(drol.steps, STEPS)
    # success is displayed in percent
    np.testing.assert_allclose(drol.values, [[0, 20, 40, 60], [0, 40, 60, 80]])
    fql_curves = curves['cube-single', 'fql']
    np.testing.assert_array_equal(fql_curves.steps, [1, 100, 200, 300])
    np.testing.assert_allclose(fql_curves.values[:, -1], [100, 0])
    assert not fql_curves.interpolated
    returns = group_curves(runs, RETURN)
    np.testing.assert_allclose(returns['cube-single', 'fql'].values[0], [0, 5, 5, 10])


def test_glob_may_match_eval_csv_files_or_parent_folders(tmp_path):
    ours(tmp_path, 'env', 'drol', 0, [0, 0, 0, 1])
    ours(tmp_path, 'env', 'drol', 1, [0, 0, 1, 1])
    by_file = load_runs([str(tmp_path / '**' / 'eval.csv')])
    by_parent = load_runs([str(tmp_path)])
    assert sorted(r.seed for r in by_file) == sorted(r.seed for r in by_parent) == [0, 1]


def test_missing_flags_are_inferred_from_path_with_a_warning(tmp_path, caplog):
    rows = [{'step': s, 'evaluation/success': 0.5} for s in STEPS]
    write_run(tmp_path / 'g' / 'antmaze-large' / 'drol' / 'seed3', rows)
    with caplog.at_level(logging.WARNING):
        (run,) = load_runs([str(tmp_path / '**' / 'seed*')])
    assert (run.env_name, run.agent_name, run.seed) == ('antmaze-large', 'drol', 3)
    assert 'flags.json missing' in caplog.text


def test_eval_csv_with_blank_cells_and_repeated_steps(tmp_path):
    header = ['evaluation/success', 'step']
    path = tmp_path / 'run'
    path.mkdir()
    # blank cell -> NaN (dropped for that metric); step 100 written twice -> the later row wins
    (path / 'eval.csv').write_text(','.join(header) + '\n0.1,0\n,50\n0.2,100\n0.9,100\n1.0,200\n')
    columns = read_eval_csv(path / 'eval.csv')
    np.testing.assert_array_equal(columns['step'], [0, 50, 100, 200])
    np.testing.assert_array_equal(columns['evaluation/success'], [0.1, np.nan, 0.9, 1.0])


def test_duplicate_seed_keeps_latest_run(tmp_path, caplog):
    fql(tmp_path, 'env', 'fql', 0, [0, 0, 0, 0], stamp='20250101_000000')
    fql(tmp_path, 'env', 'fql', 0, [1, 1, 1, 1], stamp='20250202_000000')
    with caplog.at_level(logging.WARNING):
        (run,) = load_runs([str(tmp_path / 'exp/*/*/sd*')])
    assert run.path.name.endswith('20250202_000000')
    assert 'duplicate run' in caplog.text


def test_no_runs_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match='no eval.csv'):
        load_runs([str(tmp_path / 'nothing*')])


# ------------------------------------------------------------------------- alignment


def test_align_seeds_truncates_to_the_shortest_seed_without_interpolating():
    steps = [np.array([0, 10, 20, 30]), np.array([0, 10, 20])]
    values = [np.array([1.0, 2, 3, 4]), np.array([5.0, 6, 7])]
    grid, matrix, interpolated = align_seeds(steps, values)
    assert not interpolated
    np.testing.assert_array_equal(grid, [0, 10, 20])
    np.testing.assert_array_equal(matrix, [[1, 2, 3], [5, 6, 7]])


def test_align_seeds_uses_common_steps_of_different_eval_intervals():
    steps = [np.array([0, 10, 20, 30, 40]), np.array([0, 20, 40])]
    values = [np.arange(5.0), np.array([7.0, 8, 9])]
    grid, matrix, interpolated = align_seeds(steps, values)
    assert not interpolated
    np.testing.assert_array_equal(grid, [0, 20, 40])
    np.testing.assert_array_equal(matrix, [[0, 2, 4], [7, 8, 9]])


def test_align_seeds_interpolates_offset_grids():
    steps = [np.array([0, 10, 20]), np.array([5, 15, 25])]
    values = [np.array([0.0, 10, 20]), np.array([5.0, 15, 25])]
    grid, matrix, interpolated = align_seeds(steps, values)
    assert interpolated
    # the span both seeds cover is [5, 20]; seed 0 has the fewest points in it
    np.testing.assert_array_equal(grid, [10, 20])
    np.testing.assert_allclose(matrix, [[10, 20], [10, 20]])


# ------------------------------------------------------------------------- bootstrap


def test_identical_seeds_give_zero_width_ci():
    values = np.tile([[10.0, 20.0, 30.0]], (5, 1))
    mean, low, high = bootstrap_mean_ci(values, reps=500)
    np.testing.assert_allclose(mean, [10, 20, 30])
    np.testing.assert_allclose(low, mean)
    np.testing.assert_allclose(high, mean)


def test_two_seed_ci_is_hand_computable():
    # Resampling two seeds {0, 1} gives a bootstrap mean of 0 (p=1/4), 0.5 (1/2) or 1 (1/4),
    # so the 2.5% and 97.5% percentiles are exactly 0 and 1.
    mean, low, high = bootstrap_mean_ci(np.array([0.0, 1.0]), reps=4000)
    assert (mean, low, high) == (0.5, 0.0, 1.0)


def test_ci_contains_mean_shrinks_with_seeds_and_is_reproducible():
    rng = np.random.default_rng(1)
    few = rng.normal(50, 10, size=4)
    many = rng.normal(50, 10, size=64)
    widths = []
    for sample in (few, many):
        mean, low, high = bootstrap_mean_ci(sample, reps=2000, seed=3)
        assert mean == pytest.approx(sample.mean())
        assert low < mean < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2
    assert bootstrap_mean_ci(few, seed=3) == bootstrap_mean_ci(few, seed=3)


def test_single_seed_has_zero_width_ci():
    mean, low, high = bootstrap_mean_ci(np.array([[1.0, 2.0]]))
    np.testing.assert_array_equal([mean, low, high], [[1, 2]] * 3)


# ----------------------------------------------------------------------------- table


def test_final_scores_average_the_last_window():
    curves = SeedCurves(np.arange(4), np.array([[0.0, 1, 2, 3], [4, 5, 6, 7]]), (0, 1), False)
    np.testing.assert_array_equal(final_scores(curves), [3, 7])
    np.testing.assert_array_equal(final_scores(curves, window=2), [2.5, 6.5])


def test_aggregate_iqm_and_mean_match_hand_computation():
    # agent 'a': 4 seeds x 2 tasks. Sorted, the 8 scores are 0,10,20,30,40,50,60,100;
    # IQM drops the lowest and highest 2 -> mean(20,30,40,50) = 35; mean = 310 / 8 = 38.75.
    task1 = np.array([0.0, 10, 20, 100])
    task2 = np.array([30.0, 40, 50, 60])
    matrices = score_matrices({('t1', 'a'): task1, ('t2', 'a'): task2})
    np.testing.assert_array_equal(matrices['a'], np.stack([task1, task2], axis=1))
    estimates = aggregate_estimates(matrices, reps=300)['a']
    assert estimates['IQM'].value == pytest.approx(35.0)
    assert estimates['mean'].value == pytest.approx(38.75)
    for est in estimates.values():
        assert est.low <= est.value <= est.high
        assert est.high > est.low


def test_aggregate_of_identical_seeds_has_zero_width_ci():
    matrices = {'a': np.array([[20.0, 80.0], [20.0, 80.0], [20.0, 80.0]])}
    estimates = aggregate_estimates(matrices, reps=200)['a']
    assert estimates['mean'] == Estimate(50.0, 50.0, 50.0)
    assert estimates['IQM'] == Estimate(50.0, 50.0, 50.0)


def test_aggregate_intervals_follow_the_seed_alone():
    matrices = {'a': np.random.default_rng(1).uniform(0, 100, (3, 2))}
    first = aggregate_estimates(matrices, reps=50, seed=3)
    np.random.seed(99)  # Whatever the caller did with numpy's global generator...
    state = np.random.get_state()
    assert aggregate_estimates(matrices, reps=50, seed=3) == first
    after = np.random.get_state()  # ... is left as it was.
    assert np.array_equal(after[1], state[1]) and after[2] == state[2]
    assert aggregate_estimates(matrices, reps=50, seed=4) != first


def test_unequal_seed_counts_keep_the_lowest_seeds(caplog):
    with caplog.at_level(logging.WARNING):
        matrices = score_matrices(
            {('t1', 'a'): np.array([1.0, 2, 3]), ('t2', 'a'): np.array([4.0, 5])}
        )
    np.testing.assert_array_equal(matrices['a'], [[1, 4], [2, 5]])
    assert 'unequal seed counts' in caplog.text


# ------------------------------------------------------------------------------- CLI


def make_experiment(root):
    """Two agents on two tasks, 3 seeds each; final success of agent x on task t is known."""
    finals = {
        ('task-a', 'drol'): [0.6, 0.8, 1.0],
        ('task-b', 'drol'): [0.2, 0.4, 0.6],
        ('task-a', 'fql'): [0.5, 0.5, 0.5],
        ('task-b', 'fql'): [0.0, 0.1, 0.2],
    }
    for (env, agent), per_seed in finals.items():
        for seed, final in enumerate(per_seed):
            ours(root, env, agent, seed, [0.0, final / 3, final / 2, final])
    return finals


def test_cli_writes_png_and_table(tmp_path, capsys):
    finals = make_experiment(tmp_path / 'runs')
    out = tmp_path / 'figs' / 'curves.png'
    status = main(
        [
            '--runs',
            str(tmp_path / 'runs/*/*/*/seed*'),
            '--out',
            str(out),
            '--table',
            '--by',
            'task',
            '--reps',
            '300',
        ]
    )
    assert status == 0
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert out.stat().st_size > 20_000  # a blank canvas compresses far smaller

    with open(tmp_path / 'figs' / 'curves_table.csv') as f:
        rows = {(r['label'], r['row'], r['statistic']): r for r in csv.DictReader(f)}
    for (env, agent), per_seed in finals.items():
        row = rows[agent, env, ROW_STATISTIC]
        assert float(row['value']) == pytest.approx(100 * np.mean(per_seed))
        assert float(row['std']) == pytest.approx(100 * np.std(per_seed, ddof=1))
        assert row['metric'] == SUCCESS
        assert row['n_seeds'] == '3'
    # drol's 6 final scores (in %): 20,40,60,60,80,100 -> IQM = mean(40,60,60,80) = 60
    assert float(rows['drol', 'all tasks', 'IQM']['value']) == pytest.approx(60.0)
    assert float(rows['drol', 'all tasks', 'mean']['value']) == pytest.approx(60.0)
    # fql: 0,10,20,50,50,50 -> IQM = mean(10,20,50,50) = 32.5; mean = 180 / 6 = 30
    assert float(rows['fql', 'all tasks', 'IQM']['value']) == pytest.approx(32.5)
    assert float(rows['fql', 'all tasks', 'mean']['value']) == pytest.approx(30.0)

    printed = capsys.readouterr().out
    assert '| task | drol | fql |' in printed
    assert '| task-a | 80.0 ± 20.0 | 50.0 ± 0.0 |' in printed
    assert '**IQM over 2 tasks**' in printed
    assert (tmp_path / 'figs' / 'curves_table.md').read_text() in printed
    latex = (tmp_path / 'figs' / 'curves_table.tex').read_text()
    assert r'task-a & 80.0 $\pm$ 20.0 & 50.0 $\pm$ 0.0 \\' in latex


def test_cli_falls_back_to_return_when_no_success(tmp_path):
    for seed in range(2):
        rows = [{'step': s, 'evaluation/episode.return': s + seed} for s in STEPS]
        flags = {'env_name': 'hopper-medium-v2', 'seed': seed, 'agent': {'agent_name': 'fql'}}
        write_run(tmp_path / f'seed{seed}', rows, flags)
    runs = load_runs([str(tmp_path / 'seed*')])
    assert choose_metrics(runs, None) == ([RETURN], RETURN)
    out = tmp_path / 'c.png'
    args = ['--runs', str(tmp_path / 'seed*'), '--out', str(out), '--table', '--reps', '300']
    assert main(args) == 0
    with open(tmp_path / 'c_table.csv') as f:
        (task, iqm, mean) = list(csv.DictReader(f))
    assert task['metric'] == RETURN
    assert (task['benchmark'], task['row']) == ('other', 'hopper-medium-v2')
    assert float(task['value']) == pytest.approx(300.5)


def test_python_m_drol_jax_plot_runs_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['drol_jax.plot', '--runs', str(tmp_path / 'nothing*')])
    with pytest.raises(SystemExit) as stopped:
        runpy.run_module('drol_jax.plot', run_name='__main__')
    assert stopped.value.code == 2
    assert capsys.readouterr().err == f'error: no eval.csv found under --runs {tmp_path}/nothing*\n'


def test_cli_rejects_unknown_metric(tmp_path, capsys):
    make_experiment(tmp_path)
    status = main(['--runs', str(tmp_path), '--metric', 'evaluation/nope'])
    assert status == 2
    assert 'evaluation/episode.return' in capsys.readouterr().err


# ------------------------------------------------------------------ labels and settings


def labelled(root, group, env, seed, final, label=None, config=None, steps=STEPS, agent='drol'):
    """A run of ours with an optional run_label and extra agent settings; success ends at final."""
    flags = {
        'env_name': env,
        'seed': seed,
        'run_group': group,
        'agent': {'agent_name': agent, **(config or {})},
    }
    if label is not None:
        flags['run_label'] = label
    rows = [{'step': st, 'evaluation/success': final} for st in steps]
    run_dir = root / group / env / agent / f'seed{seed}'
    write_run(run_dir, rows, flags)
    return run_dir


def test_runs_with_different_settings_are_never_pooled(tmp_path, caplog):
    # A K sweep logged without run labels: same env, agent name and seeds, different K.
    for k in (4, 16):
        for seed in (0, 1):
            labelled(tmp_path, f'k{k}', 'cube-single', seed, 0.1 * k / 16, config={'K': k})
    with caplog.at_level(logging.WARNING):
        curves = group_curves(load_runs([str(tmp_path)]), SUCCESS)
    assert sorted(curves) == [('cube-single', 'drol K=16'), ('cube-single', 'drol K=4')]
    assert curves['cube-single', 'drol K=4'].seeds == (0, 1)
    np.testing.assert_allclose(curves['cube-single', 'drol K=16'].values[:, -1], [10, 10])
    assert 'differ in K' in caplog.text
    assert 'duplicate' not in caplog.text


def test_same_setting_from_several_folders_pools_seeds(tmp_path):
    for group, seeds in (('first', (0, 1)), ('second', (2, 3))):
        for seed in seeds:
            labelled(tmp_path, group, 'cube-single', seed, 0.5, label='DROL(16)', config={'K': 16})
    (group,) = group_curves(load_runs([str(tmp_path)]), SUCCESS).values()
    assert group.seeds == (0, 1, 2, 3)


def test_duplicate_keeps_the_run_that_got_furthest(tmp_path, caplog):
    further = labelled(tmp_path, 'a', 'env', 0, 0.9, label='DROL(16)')
    labelled(tmp_path, 'b', 'env', 0, 0.1, label='DROL(16)', steps=[0, 100])
    with caplog.at_level(logging.WARNING):
        (run,) = load_runs([str(tmp_path)])
    assert run.path == further
    assert 'duplicate run' in caplog.text


def test_task_groups_come_from_the_registry():
    assert task_group('cube-single-play-singletask-task3-v0') == (
        'ogbench',
        'cube-single-play',
    )
    assert task_group('antmaze-large-play-v2') == ('d4rl', 'antmaze-large-play')
    assert task_group('hopper-medium-v2') == ('other', 'hopper-medium-v2')
    labels = ['FQL', 'DROL(16) K=16', 'DROL*', 'DROL(16) K=2', 'DROL(16)']
    assert sorted(labels, key=natural_key) == [
        'DROL(16)',
        'DROL(16) K=2',
        'DROL(16) K=16',
        'DROL*',
        'FQL',
    ]


def test_family_table_means_spread_and_layout(tmp_path, capsys):
    cube = [f'cube-single-play-singletask-task{t}-v0' for t in (1, 2, 3)]
    scene = [f'scene-play-singletask-task{t}-v0' for t in (1, 2)]
    d4rl = 'antmaze-large-play-v2'
    # final success = base + 0.1 * task index + 0.05 * seed, per label; FQL lacks cube task 3.
    base = {'DROL(16)': 0.5, 'DROL*': 0.6, 'FQL': 0.2}
    finals = {}
    for label, b in base.items():
        for envs in (cube, scene, [d4rl]):
            for t, env in enumerate(envs):
                if label == 'FQL' and env == cube[2]:
                    continue
                for seed in (0, 1):
                    finals[label, env, seed] = b + 0.1 * t + 0.05 * seed
                    group = label.replace('*', 'star').replace('(', '').replace(')', '')
                    labelled(tmp_path / 'runs', group, env, seed, finals[label, env, seed], label)

    status = main(
        [
            '--runs',
            str(tmp_path / 'runs'),
            '--out',
            str(tmp_path / 'c.png'),
            '--table',
            '--reps',
            '200',
        ]
    )
    assert status == 0
    with open(tmp_path / 'c_table.csv') as f:
        rows = {
            (r['benchmark'], r['row'], r['label'], r['statistic']): r for r in csv.DictReader(f)
        }

    def expected(label, envs):
        per_seed = [np.mean([100 * finals[label, e, s] for e in envs]) for s in (0, 1)]
        return np.mean(per_seed), np.std(per_seed, ddof=1)

    for label in base:
        for family, envs in (('cube-single-play', cube), ('scene-play', scene)):
            envs = [e for e in envs if (label, e, 0) in finals]
            row = rows['ogbench', family, label, ROW_STATISTIC]
            mean, std = expected(label, envs)
            assert float(row['value']) == pytest.approx(mean)
            assert float(row['std']) == pytest.approx(std)
            assert (row['benchmark'], row['n_tasks'], row['n_seeds']) == (
                'ogbench',
                str(len(envs)),
                '2',
            )
        d4rl_row = rows['d4rl', 'antmaze-large-play', label, ROW_STATISTIC]
        assert float(d4rl_row['value']) == pytest.approx(100 * base[label] + 2.5)
        assert rows['d4rl', 'all tasks', label, 'mean']['n_tasks'] == '1'
    # Aggregates pool a benchmark's tasks: FQL's 4 OGBench tasks x 2 seeds.
    fql_mean = rows['ogbench', 'all tasks', 'FQL', 'mean']
    assert (fql_mean['n_tasks'], fql_mean['n_seeds']) == ('4', '2')
    assert float(fql_mean['value']) == pytest.approx(27.5)

    table = capsys.readouterr().out.splitlines()
    start = table.index('| task family | DROL(16) | DROL* | FQL |')
    titles = [line.split(' | ')[0].lstrip('| ') for line in table[start + 2 :] if line]
    assert titles == [
        '*OGBench*',
        'cube-single-play (3 tasks)',
        'scene-play (2 tasks)',
        '**IQM over 5 tasks**',
        '**mean over 5 tasks**',
        '*D4RL*',
        'antmaze-large-play',
        '**IQM over 1 task**',
        '**mean over 1 task**',
    ]
    cube_line = table[start + 3]
    assert cube_line.startswith('| cube-single-play (3 tasks) | 62.5 ± 3.5 | 72.5 ± 3.5 |')
    assert cube_line.endswith('| 27.5 ± 3.5 (2/3 tasks) |')
    latex = (tmp_path / 'c_table.tex').read_text()
    assert r'\multicolumn{4}{l}{\textit{OGBench}} \\' in latex
    assert r'Task family & DROL(16) & DROL* & FQL \\' in latex


def test_settings_every_label_shares_leave_the_columns():
    tiny = 'actor_hidden_dims=(64, 64) batch_size=64'
    columns, shared = factor_shared_settings(
        [f'DROL(16) {tiny}', f'FQL {tiny}', f'DROL(16) num_candidates=4 {tiny}']
    )
    assert shared == ['actor_hidden_dims=(64, 64)', 'batch_size=64']
    assert sorted(columns.values()) == ['DROL(16)', 'DROL(16) num_candidates=4', 'FQL']
    # A setting some labels lack stays in those that have it: labels stay distinct.
    columns, shared = factor_shared_settings(['DROL(16) num_candidates=4', 'DROL(16)'])
    assert shared == [] and columns['DROL(16) num_candidates=4'] == 'DROL(16) num_candidates=4'
