"""Tests for drol_jax.sweep: sweep files, dry runs of the shipped sweeps, status, local launches."""

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from drol_jax.sweep import cli, spec
from drol_jax.sweep.jobs import STATE_FILE, job_dir, read_progress
from drol_jax.sweep.launchers import parse_sbatch_lines, plan_launch
from drol_jax.sweep.status import format_status, sweep_statuses

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / 'sweeps'
TINY = {
    'agent.actor_hidden_dims': (32, 32),
    'agent.value_hidden_dims': (32, 32),
    'agent.batch_size': 32,
}


def write_sweep(folder, body, name='my_sweep'):
    """A sweep file whose get_sweep() returns ``body`` (a dict literal as Python source)."""
    path = Path(folder) / f'{name}.py'
    path.write_text(f'def get_sweep():\n    return {body}\n')
    return str(path)


def toy_sweep(folder, grid=None, flags=None, agents=('agents/drol.py',), num_seeds=2):
    """A toy-multimodal sweep with tiny networks and a short run."""
    run_flags = {
        **TINY,
        'offline_steps': 200,
        'log_interval': 50,
        'eval_interval': 100,
        'eval_episodes': 5,
        'save_interval': 100,
        **(flags or {}),
    }
    body = dict(
        name='toy_test',
        envs=['toy-multimodal'],
        agents=list(agents),
        flags=run_flags,
        grid=grid or {},
        num_seeds=num_seeds,
    )
    return write_sweep(folder, repr(body))


def commands(output):
    return [line for line in output.splitlines() if line.startswith('python main.py ')]


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: '), err
    return err[0]


# ----------------------------------------------------------------------- shipped sweeps


def test_ogbench_drol16_dry_run_lists_50_jobs_with_the_published_settings(tmp_path, capsys):
    status = cli.main([f'{SWEEPS}/ogbench.py:drol16', '--dry_run', '--save_dir', str(tmp_path)])
    assert status == 0
    out = capsys.readouterr().out
    assert 'ogbench_drol16 (' in out and '50 jobs, 400 runs (8 seeds per job' in out
    assert 'device-hours' in out and 'AMD EPYC' in out
    lines = commands(out)
    assert len(lines) == 50
    for line in lines:
        for flag in (
            '--agent=agents/drol.py',
            '--preset=paper',
            '--agent.num_candidates=16',
            '--seed=0',
            '--num_seeds=8',
            '--run_group=ogbench_drol16',
            '--offline_steps=1000000',
            '--eval_interval=100000',
            '--eval_episodes=50',
        ):
            assert f' {flag} ' in f'{line} ', (flag, line)
    cube = [line for line in lines if '--env_name=cube-single-play-singletask-task' in line]
    assert len(cube) == 5
    assert all(' --agent.bc_coef=10.0 ' in line for line in cube)
    giant = [line for line in lines if 'antmaze-giant-navigate-singletask' in line]
    assert all(
        '--agent.bc_coef=0.03 --agent.num_candidates=16 --agent.discount=0.995 '
        '--agent.q_agg=min' in line
        for line in giant
    )
    assert not (tmp_path / 'ogbench_drol16').exists()  # a dry run writes nothing


def test_drol_star_fql_and_k_sweep_carry_their_settings(tmp_path):
    star = spec.expand(spec.load_sweep(f'{SWEEPS}/ogbench.py:drol_star'), str(tmp_path))
    by_env = {job.env_name: job for job in star}
    assert '--agent.num_candidates=64' in by_env['scene-play-singletask-task3-v0'].args
    assert {job.label for job in star} == {'DROL*'}

    fql = spec.expand(spec.load_sweep(f'{SWEEPS}/ogbench.py:fql'), str(tmp_path))
    cube = [job for job in fql if job.task_family == 'cube-single-play']
    assert len(fql) == 50 and len(cube) == 5
    assert all('--agent.alpha=300.0' in job.args or '--agent.alpha=300' in job.args for job in cube)

    k_jobs = spec.expand(spec.load_sweep(f'{SWEEPS}/ogbench.py:k_sweep'), str(tmp_path))
    assert len(k_jobs) == 70
    assert len({job.run_dirs[0] for job in k_jobs}) == 70
    cube = {job.run_group: job for job in k_jobs if job.task_family == 'cube-single-play'}
    assert sorted(cube) == sorted(
        f'ogbench_k_sweep-num_candidates={k}' for k in (1, 2, 4, 8, 16, 32, 64)
    )
    assert cube['ogbench_k_sweep-num_candidates=4'].label == 'DROL(16) num_candidates=4'
    # K=16 is DROL(16) itself: the explicit value equals the preset's.
    assert cube['ogbench_k_sweep-num_candidates=16'].label == 'DROL(16)'
    assert cube['ogbench_k_sweep-num_candidates=4'].env_name == (
        'cube-single-play-singletask-task2-v0'
    )


@pytest.mark.parametrize('variant', ['drol', 'drol_star', 'fql'])
def test_d4rl_sweeps_list_500k_updates(tmp_path, capsys, variant):
    status = cli.main([f'{SWEEPS}/d4rl.py:{variant}', '--dry_run', '--save_dir', str(tmp_path)])
    assert status == 0
    out = capsys.readouterr().out
    assert '500,000 per run' in out
    lines = commands(out)
    assert len(lines) == 18
    assert all(' --offline_steps=500000 ' in line for line in lines)
    assert sum('--env_name=antmaze-' in line for line in lines) == 6


def test_num_seeds_option_and_cost_estimate(tmp_path, capsys):
    args = [f'{SWEEPS}/d4rl.py:fql', '--dry_run', '--num_seeds', '2', '--updates_per_second', '500']
    assert cli.main([*args, '--save_dir', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # 18 jobs x 2 seeds x 500k updates / 500 per second = 10 hours.
    assert '18 jobs, 36 runs' in out and 'estimate: 10 device-hours' in out


# ------------------------------------------------------------------------ sweep files


def test_each_grid_point_gets_its_own_run_group_and_label(tmp_path):
    path = toy_sweep(tmp_path, grid={'agent.num_candidates': [2, 4], 'agent.q_coef': [0.5]})
    jobs = spec.expand(spec.load_sweep(path), str(tmp_path))
    assert [job.run_group for job in jobs] == [
        'toy_test-num_candidates=2',
        'toy_test-num_candidates=4',
    ]
    assert jobs[0].run_dirs == (
        str(tmp_path / 'toy_test/runs/toy_test-num_candidates=2/toy-multimodal/drol/seed0'),
        str(tmp_path / 'toy_test/runs/toy_test-num_candidates=2/toy-multimodal/drol/seed1'),
    )
    assert "'--agent.actor_hidden_dims=(32,32)'" in jobs[0].command
    assert '--agent.q_coef=0.5' in jobs[0].args and '--progress=false' in jobs[0].args
    assert 'num_candidates=2' in jobs[0].label and jobs[0].total_steps == 200


@pytest.mark.parametrize(
    'body, message',
    [
        ("{'envs': ['toy-multimodal'], 'agents': ['agents/drol.py'], 'sede': 1}", "'sede'"),
        (
            "{'envs': ['toy-multimodal'], 'agents': ['agents/drol.py'], 'flags': {'seed': 3}}",
            "sets 'seed'",
        ),
        (
            "{'envs': ['toy-multimodal'], 'agents': ['agents/drol.py'], "
            "'flags': {'ofline_steps': 1}}",
            "'ofline_steps' is not a flag of main.py",
        ),
        (
            "{'envs': ['toy-multimodal'], 'agents': ['agents/fql.py'], "
            "'grid': {'agent.num_candidates': [1, 2]}}",
            'agent.num_candidates is not a hyperparam',
        ),
        ("{'envs': ['cube-singel'], 'agents': ['agents/drol.py']}", 'Unknown environment'),
        (
            "{'envs': ['toy-multimodal'], 'agents': ['agents/nope.py']}",
            "'agents/nope.py' not found",
        ),
        (
            "{'envs': ['toy-multimodal'], 'agents': ['agents/drol.py'], 'presets': ['papr']}",
            "'papr'",
        ),
        ("{'envs': 'toy-multimodal', 'agents': ['agents/drol.py']}", 'list of strings'),
    ],
)
def test_sweep_file_mistakes_are_one_error_line(tmp_path, capsys, body, message):
    path = write_sweep(tmp_path, body)
    assert cli.main([path, '--dry_run', '--save_dir', str(tmp_path)]) == 2
    assert message in one_error_line(capsys)


def test_variant_is_required_and_checked(tmp_path, capsys):
    assert cli.main([f'{SWEEPS}/ogbench.py', '--dry_run']) == 2
    assert 'holds several sweeps' in one_error_line(capsys)
    assert cli.main([f'{SWEEPS}/ogbench.py:drol17', '--dry_run']) == 2
    assert "unknown variant 'drol17'" in one_error_line(capsys)
    assert cli.main(['nowhere.py', '--dry_run']) == 2
    assert 'does not exist' in one_error_line(capsys)
    with pytest.raises(SystemExit) as exit_info:
        cli.main([f'{SWEEPS}/toy.py', '--launcher', 'cloud'])
    assert exit_info.value.code == 2
    assert 'cloud' in one_error_line(capsys)


def test_sbatch_lines():
    assert parse_sbatch_lines(['--constraint=a100', 'exclusive', '#SBATCH --mail-type=END']) == {
        'constraint': 'a100',
        'exclusive': True,
        'mail_type': 'END',
    }
    with pytest.raises(spec.UserError):
        parse_sbatch_lines(['two words'])


# ------------------------------------------------------------------ status and planning


def finish_run(job, seed_index, success=0.5, complete=True):
    """Fake a seed folder of ``job`` as main.py leaves it."""
    run_dir = Path(job.run_dirs[seed_index])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / 'train.csv').write_text('step,training/actor/q\n50,1.0\n100,1.2\n')
    (run_dir / 'eval.csv').write_text(f'step,evaluation/success\n1,0.0\n100,{success}\n')
    summary = {'complete': complete, 'step': 200 if complete else 100}
    (run_dir / 'summary.json').write_text(json.dumps(summary))


def write_state(sweep_dir, job, **state):
    folder = Path(job_dir(sweep_dir, job))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE_FILE).write_text(json.dumps({'host': socket.gethostname(), **state}))


def test_status_and_launch_plan_of_every_state(tmp_path, capsys):
    path = toy_sweep(tmp_path, grid={'agent.q_coef': [0.1, 0.2, 0.3, 0.4, 0.5]})
    sweep = spec.load_sweep(path)
    done, failed, running, died, fresh = jobs = spec.expand(sweep, str(tmp_path))
    sweep_dir = spec.sweep_dir(str(tmp_path), sweep)
    for index in range(2):
        finish_run(done, index, success=0.25 + 0.5 * index)
        finish_run(died, index, complete=False)
    (Path(died.run_dirs[0]) / 'checkpoint_100.msgpack').write_bytes(b'')
    (Path(died.run_dirs[1]) / 'checkpoint_100.msgpack').write_bytes(b'')
    gone = subprocess.run(
        [sys.executable, '-c', 'import os; print(os.getpid())'],
        capture_output=True,
        text=True,
        check=True,
    )
    write_state(sweep_dir, failed, state='failed', pid=1, error='error: bad discount 1.5.')
    write_state(sweep_dir, running, state='running', pid=os.getpid())
    write_state(sweep_dir, died, state='running', pid=int(gone.stdout))
    cli.write_sweep_file(sweep, jobs, sweep_dir)

    statuses = sweep_statuses(sweep_dir, jobs)
    assert [s.state for s in statuses] == ['done', 'failed', 'running', 'stopped', 'pending']
    assert read_progress(died).checkpoint_step == 100
    assert read_progress(done).success == pytest.approx(0.5)
    plan = plan_launch(statuses, retry_failed=False)
    assert (plan.launch, plan.done, plan.active, plan.failed) == (
        [died, fresh],
        [done],
        [running],
        [failed],
    )
    assert plan_launch(statuses, retry_failed=True).launch == [failed, died, fresh]

    assert cli.main(['status', sweep_dir]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('sweep toy_test (') and lines[1].split() == [
        'state',
        'step',
        'success',
        'label',
        'job',
        'detail',
    ]
    by_state = {line.split()[0]: line for line in lines[2:-1]}
    assert by_state['done'].split()[1:3] == ['200/200', '50.0%']
    assert by_state['failed'].endswith('error: bad discount 1.5.')
    assert by_state['stopped'].split()[1:3] == ['100/200', '50.0%']
    assert 'ended without a word' in by_state['stopped']
    assert by_state['pending'].endswith('not launched')
    assert lines[-1] == (
        'totals: 1 done, 1 running, 1 pending, 1 stopped, 1 failed (5 jobs, 10 runs)'
    )


def test_status_of_a_folder_that_is_no_sweep(tmp_path, capsys):
    assert cli.main(['status', str(tmp_path)]) == 2
    assert 'is not a sweep folder' in one_error_line(capsys)


# --------------------------------------------------------------------------- end to end


def csv_steps(path):
    with open(path) as f:
        return [int(float(row['step'])) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_local_launch_is_idempotent_resumes_and_retries_failed_jobs(tmp_path, capsys):
    # Two jobs x 2 seeds; lr 1e9 passes every check (the dry run refuses what a run would
    # refuse) and fails in training, with a non-finite loss.
    path = toy_sweep(tmp_path, grid={'agent.lr': [3e-4, 1e9]})
    sweep = spec.load_sweep(path)
    good, bad = spec.expand(sweep, str(tmp_path))
    sweep_dir = spec.sweep_dir(str(tmp_path), sweep)
    # Leftovers of an attempt that died before its first checkpoint are moved aside.
    os.makedirs(good.run_dirs[0])
    Path(good.run_dirs[0], 'train.csv').write_text('step,x\n50,1\n')
    launch = [path, '--save_dir', str(tmp_path), '--parallel', '2']

    assert cli.main(launch) == 1  # a job failed
    out = capsys.readouterr().out
    assert 'jobs: 2 to launch' in out and 'finished: 1 done, 1 failed' in out
    for run_dir in good.run_dirs:
        assert json.loads(Path(run_dir, 'summary.json').read_text())['complete']
        assert csv_steps(Path(run_dir, 'train.csv')) == [50, 100, 150, 200]
    discarded = list(Path(job_dir(sweep_dir, good), 'discarded').glob('*/seed0/train.csv'))
    assert len(discarded) == 1
    state = json.loads(Path(job_dir(sweep_dir, bad), STATE_FILE).read_text())
    assert state['state'] == 'failed' and state['error'].startswith('error: ')
    assert 'non-finite' in state['error']

    assert cli.main(launch) == 0
    assert 'jobs: 0 to launch, 1 done (skipped), 1 failed (skipped' in capsys.readouterr().out

    # An unfinished run resumes from its checkpoint; --retry_failed runs the failed job again.
    for run_dir in good.run_dirs:
        os.remove(Path(run_dir, 'summary.json'))
    assert cli.main([*launch, '--retry_failed']) == 1
    assert 'jobs: 2 to launch' in capsys.readouterr().out
    log = Path(job_dir(sweep_dir, good), 'log.txt').read_text()
    headers = [line for line in log.splitlines() if line.startswith('=== ')]
    assert len(headers) == 2 and headers[1].endswith(' --resume') and 'Resuming' in log
    for run_dir in good.run_dirs:
        assert csv_steps(Path(run_dir, 'eval.csv')) == [1, 100, 200]
    assert cli.main(['status', sweep_dir]) == 0
    report = capsys.readouterr().out
    assert 'totals: 1 done, 0 running, 0 pending, 0 stopped, 1 failed (2 jobs, 4 runs)' in report
    assert format_status(sweep_statuses(sweep_dir, [good])).startswith('state')
