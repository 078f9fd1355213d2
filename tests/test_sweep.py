"""Tests for drol_jax.sweep: sweep files, dry runs of the shipped sweeps, status, local launches."""

import csv
import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import AGENT_PATHS, HELD_AGENT, agent_file, check_toy_run, write_agent_file

from drol_jax.errors import UserError
from drol_jax.sweep import cli, cost, gpus, spec
from drol_jax.sweep.jobs import (
    LOG_FILE,
    STATE_FILE,
    SUBMITTED_FILE,
    JobRunner,
    job_dir,
    read_json,
    read_progress,
)
from drol_jax.sweep.launchers import LocalLauncher, plan_launch
from drol_jax.sweep.slurm import PackRunner, SlurmOptions, _refusal, parse_sbatch_lines
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
    assert 'estimate: 5,222 device-hours' in out and 'AMD EPYC' in out
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


# Every agent as the FQL and DROL papers name it.
PAPER_LABELS = {'DROL(16)', 'DROL*', 'FQL', 'IQL', 'ReBRAC', 'IFQL', 'RLPD'}


def sweep_variants(path):
    """``FILE:VARIANT`` for every variant of a sweep file (``FILE`` when it takes none)."""
    try:
        spec.load_sweep(f'{path}:no-such-variant')
    except UserError as e:
        if 'takes no argument' in str(e):
            return [str(path)]
        return [f'{path}:{v}' for v in str(e).rsplit('choose one of ', 1)[1].split(', ')]
    raise AssertionError(f'{path} accepted a bogus variant')


def test_every_variant_of_every_sweep_file_expands_with_the_papers_labels(tmp_path):
    sources = [source for path in sorted(SWEEPS.glob('*.py')) for source in sweep_variants(path)]
    for variant in ('ogbench.py:iql', 'd4rl.py:ifql', 'offline_to_online.py:rlpd', 'toy.py:panel'):
        assert str(SWEEPS / variant) in sources
    labels = set()
    for source in sources:
        jobs = spec.expand(spec.load_sweep(source), str(tmp_path), num_seeds=1)
        names = {job.label.split(' ')[0] for job in jobs}
        assert jobs and names <= PAPER_LABELS, (source, names)
        labels |= names
    assert labels == PAPER_LABELS


def test_offline_to_online_sweeps_carry_the_published_online_settings(tmp_path):
    def jobs(variant):
        return spec.expand(spec.load_sweep(f'{SWEEPS}/offline_to_online.py:{variant}'), tmp_path)

    fql = {job.env_name: job for job in jobs('fql') if job.seeds == (0,)}
    assert len(fql) == 15 and {job.label for job in fql.values()} == {'FQL'}
    # The online alpha differs from the offline one (30 and 10 offline).
    humanoid = fql['humanoidmaze-medium-navigate-singletask-task1-v0'].args
    assert '--agent.alpha=100.0' in humanoid and '--agent.discount=0.995' in humanoid
    assert '--agent.alpha=30.0' in fql['antsoccer-arena-navigate-singletask-task4-v0'].args
    assert '--agent.alpha=1000.0' in fql['pen-cloned-v1'].args
    for job in fql.values():
        assert '--offline_steps=1000000' in job.args and '--online_steps=1000000' in job.args
    # Online training runs one seed per process: 8 seeds are 8 jobs with their own folders.
    rlpd = jobs('rlpd')
    assert len(rlpd) == 120 and {job.seeds for job in rlpd} == {(s,) for s in range(8)}
    assert len({job.run_dirs[0] for job in rlpd}) == 120
    for job in rlpd:
        assert job.agent_file.endswith('sac.py') and job.label == 'RLPD'
        assert {'--offline_steps=0', '--balanced_sampling=true', '--num_seeds=1'} <= set(job.args)
    assert {job.label for job in jobs('drol16')} == {'DROL(16)'}


def test_seeds_per_job_splits_the_seeds_into_jobs(tmp_path):
    body = dict(
        envs=['toy-multimodal'], agents=['agents/fql.py'], seed=3, num_seeds=5, seeds_per_job=2
    )
    jobs = spec.expand(spec.load_sweep(write_sweep(tmp_path, repr(body))), str(tmp_path))
    assert [job.seeds for job in jobs] == [(3, 4), (5, 6), (7,)]
    assert [job.key.rsplit('/', 1)[1] for job in jobs] == ['seeds3-4', 'seeds5-6', 'seeds7-7']
    assert '--seed=7' in jobs[2].args and '--num_seeds=1' in jobs[2].args


def toy_sweeps():
    """The shipped sweeps/toy.py as a module."""
    import importlib.util

    module_spec = importlib.util.spec_from_file_location('toy_sweeps', SWEEPS / 'toy.py')
    toy = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(toy)
    return toy


@pytest.mark.slow
def test_toy_panel_runs_and_the_table_shows_every_agent_side_by_side(tmp_path, capsys):
    """Every agent of the panel through the sweep launcher and main.py, then one table."""
    from drol_jax.plot import cli as plot_cli

    toy = toy_sweeps()
    short = {
        **TINY,
        'offline_steps': 100,
        'log_interval': 50,
        'eval_interval': 50,
        'eval_episodes': 3,
        'save_interval': 100,
    }
    folders = []
    for variant in ('panel', 'rlpd'):
        sweep = toy.get_sweep(variant)
        online = sweep['flags'].get('online_steps')
        flags = {**sweep['flags'], **short}
        if online:
            flags.update(offline_steps=0, online_steps=100)
        path = write_sweep(tmp_path, repr({**sweep, 'flags': flags}), name=f'toy_{variant}')
        assert cli.main([path, '--save_dir', str(tmp_path), '--parallel', '2']) == 0
        folders.append(str(tmp_path / sweep['name']))
        if online:
            continue
        # Each offline agent file end to end: its logs, checkpoint, summary and printed lines.
        loaded = spec.load_sweep(path)
        sweep_folder = spec.sweep_dir(str(tmp_path), loaded)
        for job in spec.expand(loaded, str(tmp_path)):
            log = Path(job_dir(sweep_folder, job), LOG_FILE).read_text()
            name = agent_file(job.agent_file).default_config()['agent_name']
            for seed, run_dir in zip(job.seeds, job.run_dirs, strict=True):
                check_toy_run(run_dir, name, log, steps=100, seed=seed)
    capsys.readouterr()
    out = tmp_path / 'panel.png'
    assert plot_cli.main(['--runs', *folders, '--out', str(out), '--table', '--reps', '50']) == 0
    table = capsys.readouterr().out
    assert '| task family | DROL(16) | FQL | IFQL | IQL | RLPD | ReBRAC |' in table
    assert 'Every column ran with actor_hidden_dims=(32, 32), batch_size=32' in table
    assert table.count('| toy-multimodal |') == 1


def test_every_agent_file_runs_end_to_end_in_the_panel_or_through_main():
    """The toy panel (above) and test_main's end-to-end runs between them cover agents/."""
    import test_main

    panel = {a for v in ('panel', 'rlpd') for a in toy_sweeps().get_sweep(v)['agents']}
    marker = test_main.test_main_trains_and_evaluates_end_to_end.pytestmark
    (through_main,) = [m.args[1] for m in marker if m.name == 'parametrize']
    covered = {str(ROOT / a) for a in panel | set(through_main) if a.startswith('agents/')}
    assert covered == set(AGENT_PATHS)


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


def estimate_hours(out):
    line = next(line for line in out.splitlines() if line.startswith('estimate: '))
    return float(line.split()[1].replace(',', ''))


@pytest.mark.parametrize(
    'variant, hours', [('drol16', 5222), ('fql', 5189), ('drol_star', 7291), ('k_sweep', 8150)]
)
def test_estimate_prices_each_job_at_its_own_k(tmp_path, capsys, variant, hours):
    # DROL* and the K sweep hold K up to 64, which costs 2.5x K=16 per update on the CPU.
    args = [f'{SWEEPS}/ogbench.py:{variant}', '--dry_run', '--save_dir', str(tmp_path)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert estimate_hours(out) == pytest.approx(hours, rel=2e-3)
    if variant == 'k_sweep':
        assert 'DROL K=2, hidden 4x512, batch 256, 8 seeds: 10 jobs at 31.6' in out
        assert 'K interpolated 1-4' in out and 'K interpolated 16-64' in out


def test_estimate_of_small_networks_uses_their_own_rate(tmp_path, capsys):
    assert cli.main([f'{SWEEPS}/toy.py', '--dry_run', '--save_dir', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # Measured at the toy sweep's own sizes, compilation included: minutes, not 0.26 h.
    assert 'DROL K=16, hidden 2x64, batch 64, 2 seeds: 1 job at' in out
    assert 'not measured' not in out and estimate_hours(out) < 0.1
    assert cli.main([toy_sweep(tmp_path), '--dry_run', '--save_dir', str(tmp_path)]) == 0
    assert 'sizes not measured' in capsys.readouterr().out  # tiny (32, 32): said so


def device_check_file(folder, rates, platform='gpu'):
    """A device-check result (the test's own figures, in the file format the dry run reads)."""
    rows = [
        {
            'agent': 'drol',
            'num_candidates': 16,
            'mode': 'fused',
            'hidden': [32, 32],
            'batch_size': 32,
            'seeds': 2,
            'jobs_per_gpu': jobs,
            'seconds_per_update': seconds,
            'compile_s': 5.0,
        }
        for jobs, seconds in rates.items()
    ]
    payload = {
        'tool': 'bench/device_check.py',
        'date': '2026-01-01 00:00:00',
        'device': {'platform': platform, 'kind': 'Test GPU', 'count': 1},
        'rates': rows,
    }
    path = Path(folder) / 'device_check.json'
    path.write_text(json.dumps(payload))
    return str(path)


def test_dry_run_plans_a_node_from_the_device_check(tmp_path, capsys):
    path = toy_sweep(tmp_path, grid={'agent.q_coef': [0.5, 1.0, 2.0]})
    measured = device_check_file(tmp_path, {1: 0.01, 2: 0.015})
    args = [path, '--dry_run', '--save_dir', str(tmp_path), '--device_check', measured]
    assert cli.main([*args, '--gpus', '1', '--jobs_per_gpu', '2']) == 0
    out = capsys.readouterr().out
    # Each job: 200 updates x 15 ms + 5 s of compilation = 8 s; 3 jobs on 2 places: 16 s.
    assert 'plan: 1 GPU(s) x 2 job(s) per GPU (2 jobs at a time' in out
    assert '3 jobs in about 16 s wall-clock' in out
    assert 'rates: measured by bench/device_check.py on Test GPU (gpu)' in out
    # Alone a job takes 200 x 10 ms + 5 s = 7 s: 21 device-seconds in all.
    assert 'estimate: 0.0058 device-hours (21 s)' in out
    assert cli.main([*args, '--gpus', '2', '--jobs_per_gpu', '4']) == 2
    assert 'jobs per GPU measured: 1, 2' in one_error_line(capsys)


def test_no_gpu_figure_without_a_measured_rate(tmp_path, capsys):
    path = toy_sweep(tmp_path)
    args = [path, '--dry_run', '--save_dir', str(tmp_path), '--gpus', '8']
    assert cli.main(args) == 0
    plan = [line for line in capsys.readouterr().out.splitlines() if line.startswith('plan: ')]
    assert plan == [
        'plan: 8 GPU(s) x 1 job(s) per GPU: needs update rates measured on that GPU: run python '
        'bench/device_check.py on the node and pass --device_check FILE (or --updates_per_second)'
    ]
    assert cli.main([*args, '--updates_per_second', '800']) == 0
    assert '(--updates_per_second)' in capsys.readouterr().out
    bad = tmp_path / 'bad.json'
    bad.write_text('{"tool": "something else"}')
    assert cli.main([*args, '--device_check', str(bad)]) == 2
    assert 'not a bench/device_check.py result' in one_error_line(capsys)
    assert cli.main([*args, '--device_check', str(bad), '--updates_per_second', '8']) == 2
    assert 'not both' in one_error_line(capsys)


def test_interpolation_between_measured_points():
    points = {1: 30.0, 4: 36.0, 16: 48.0}
    assert cost.interpolate(points, 4, 'linear') == (36.0, 'measured')
    assert cost.interpolate(points, 2, 'linear') == (32.0, 'interpolated 1-4')
    assert cost.interpolate(points, 64, 'linear') == (96.0, 'extrapolated from 4, 16')
    assert cost.interpolate({8: 2.0}, 1, 'proportional') == (2.0, 'taken at 8')
    assert cost.interpolate({8: 2.0}, 32, 'proportional') == (8.0, 'scaled from 8')
    assert cost.makespan([8, 8, 8], 2) == 16 and cost.makespan([5, 1, 1, 1], 2) == 5


# ------------------------------------------------------------------------ GPU placement

H200 = [gpus.Gpu(str(i), 'NVIDIA H200', 143771, f'GPU-{i}') for i in range(3)]


def test_visible_gpus_follow_cuda_visible_devices():
    assert gpus.visible_gpus({}, H200) == (H200, 'nvidia-smi')
    chosen, how = gpus.visible_gpus({'CUDA_VISIBLE_DEVICES': 'GPU-2,0'}, H200)
    assert [(g.device, g.name) for g in chosen] == [('GPU-2', 'NVIDIA H200'), ('0', 'NVIDIA H200')]
    assert how == 'CUDA_VISIBLE_DEVICES=GPU-2,0'
    assert gpus.visible_gpus({'CUDA_VISIBLE_DEVICES': ''}, H200)[0] == []
    assert gpus.visible_gpus({}, None) == (
        [],
        'nvidia-smi is not available (no NVIDIA driver here)',
    )


def test_gpus_option_picks_a_count_or_ids():
    assert gpus.choose_gpus(gpus.parse_gpus('2'), H200, 'x') == H200[:2]
    assert gpus.choose_gpus(gpus.parse_gpus('2,0'), H200, 'x') == [H200[2], H200[0]]
    assert gpus.choose_gpus(gpus.parse_gpus('1,'), H200, 'x') == [H200[1]]
    assert gpus.choose_gpus(None, H200, 'x') == H200
    for value, message in [
        ('4', 'only 3 GPU(s) visible'),
        ('0,7', 'GPU 7 not visible'),
        ('0', 'count >= 1'),
        ('1,1', 'distinct'),
    ]:
        with pytest.raises(spec.UserError, match=re.escape(message)):
            gpus.choose_gpus(gpus.parse_gpus(value), H200, 'x')
    with pytest.raises(spec.UserError, match='no GPU is visible here'):
        gpus.choose_gpus(2, [], 'nvidia-smi lists no GPU')


def test_each_job_sees_one_gpu_and_its_memory_share(monkeypatch):
    for name in gpus.MEMORY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    slots = gpus.make_slots(H200[:2], 2, 'share', cpu_jobs=0)
    # Interleaved: the first jobs spread over the GPUs before any GPU gets a second one.
    assert [slot.env for slot in slots] == [
        {'CUDA_VISIBLE_DEVICES': device, 'XLA_PYTHON_CLIENT_MEM_FRACTION': '0.450'}
        for device in ('0', '1', '0', '1')
    ]
    plan = gpus.describe_slots(slots, 2, 'nvidia-smi')
    assert plan.startswith('placement: 2 GPU(s) [0 (NVIDIA H200, 143771 MB); 1 (NVIDIA H200')
    assert '2 job(s) per GPU: 4 job(s) at a time' in plan
    assert 'XLA_PYTHON_CLIENT_MEM_FRACTION=0.450' in plan
    grow = gpus.make_slots(H200[:1], 4, 'grow', cpu_jobs=0)
    assert grow[0].env == {'CUDA_VISIBLE_DEVICES': '0', 'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}
    alone = gpus.make_slots(H200[:1], 1, 'share', cpu_jobs=0)
    assert alone[0].env == {'CUDA_VISIBLE_DEVICES': '0'}
    assert "JAX's default preallocation" in gpus.describe_slots(alone, 1, 'nvidia-smi')
    # A share the user exported is kept (the jobs inherit it).
    monkeypatch.setenv('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.2')
    kept = gpus.make_slots(H200[:1], 2, 'share', cpu_jobs=0)
    assert kept[0].env == {'CUDA_VISIBLE_DEVICES': '0'}
    assert 'your own XLA_PYTHON_CLIENT_MEM_FRACTION=0.2' in gpus.describe_slots(kept, 2, 'x')
    cpu = gpus.make_slots([], 2, 'share', cpu_jobs=3)
    assert [slot.env for slot in cpu] == [{}, {}, {}] and cpu[0].where == 'CPU'


def test_gpu_options_on_a_machine_without_gpus(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gpus, 'query_nvidia_smi', lambda: None)
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    args = cli.launch_parser().parse_args([str(tmp_path / 'x.py'), '--jobs_per_gpu', '2'])
    slots, line = cli.local_slots(args)
    assert [slot.gpu for slot in slots] == [None]
    assert line == (
        'placement: 1 job(s) at a time on the CPU (no GPU: nvidia-smi is not available (no '
        'NVIDIA driver here)); --jobs_per_gpu 2 has no effect without a GPU'
    )
    path = toy_sweep(tmp_path)
    assert cli.main([path, '--gpus', '2', '--save_dir', str(tmp_path)]) == 2
    assert 'no GPU is visible here' in one_error_line(capsys)
    assert not (tmp_path / 'toy_test').exists()  # nothing written, nothing launched


def test_parallel_beyond_the_gpu_places_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gpus, 'query_nvidia_smi', lambda: H200[:2])
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    path = toy_sweep(tmp_path)
    assert cli.main([path, '--parallel', '5', '--save_dir', str(tmp_path)]) == 2
    assert 'give 2 places' in one_error_line(capsys)


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
        (
            "{'envs': ['toy-multimodal'], 'agents': ['agents/drol.py'], 'seeds_per_job': 0}",
            'seeds_per_job must be an integer >= 1',
        ),
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


@pytest.mark.parametrize(
    'returncode, state, says',
    [
        (143, 'stopped', 'stopped by SIGTERM during start-up; the next launch starts it again'),
        (-15, 'stopped', 'stopped by SIGTERM; the next launch starts it again'),
        (130, 'stopped', 'stopped by SIGINT during start-up'),
        (-2, 'stopped', 'stopped by SIGINT'),
        (0, 'stopped', 'interrupted; run the sweep again to resume'),
        (2, 'failed', 'error: bad discount 1.5.'),
        (-9, 'failed', 'killed by SIGKILL; last line: error: bad discount 1.5.'),
    ],
)
def test_a_job_stopped_by_a_signal_is_stopped_not_failed(tmp_path, returncode, state, says):
    sweep = spec.load_sweep(toy_sweep(tmp_path))
    (job,) = spec.expand(sweep, str(tmp_path))
    sweep_dir = spec.sweep_dir(str(tmp_path), sweep)
    runner = JobRunner(job, sweep_dir, str(ROOT), shield_requeue_signal=False)
    assert runner._finish(returncode, 'Environment: toy\nerror: bad discount 1.5.\n') == state
    recorded = json.loads(Path(job_dir(sweep_dir, job), STATE_FILE).read_text())
    assert recorded['state'] == state and recorded['returncode'] == returncode
    assert says in recorded.get('reason', recorded.get('error'))
    (status,) = sweep_statuses(sweep_dir, [job])
    assert status.state == state and plan_launch([status], False).launch == (
        [job] if state == 'stopped' else []
    )


def test_jobs_that_never_started_are_pending(tmp_path, capsys):
    sweep = spec.load_sweep(toy_sweep(tmp_path))
    (job,) = spec.expand(sweep, str(tmp_path))
    sweep_dir = spec.sweep_dir(str(tmp_path), sweep)
    gone = subprocess.run(
        [sys.executable, '-c', 'import os; print(os.getpid())'],
        text=True,
        capture_output=True,
        check=True,
    )
    folder = Path(job_dir(sweep_dir, job))
    folder.mkdir(parents=True)
    submitted = {'launcher': 'local', 'host': socket.gethostname(), 'pid': int(gone.stdout)}
    (folder / SUBMITTED_FILE).write_text(json.dumps(submitted))
    (status,) = sweep_statuses(sweep_dir, [job])
    assert (status.state, status.active) == ('pending', False)
    assert status.detail.startswith(f'not started (pid {int(gone.stdout)} ended before starting')
    assert plan_launch([status], retry_failed=False).launch == [job]
    # While the launcher lives, the job waits in it: left alone by another launch.
    (folder / SUBMITTED_FILE).write_text(json.dumps({**submitted, 'pid': os.getpid()}))
    (status,) = sweep_statuses(sweep_dir, [job])
    assert (status.state, status.active) == ('pending', True)


def test_runners_pickle_without_their_processes(tmp_path):
    sweep = spec.load_sweep(toy_sweep(tmp_path))
    (job,) = spec.expand(sweep, str(tmp_path))
    pack = PackRunner([job], str(tmp_path), str(ROOT), jobs_per_gpu=2, gpu_memory='share')
    pack._runners = [JobRunner(job, str(tmp_path), str(ROOT), True, env={'A': '1'})]
    pack._runners[0].stop(15)
    copy = pickle.loads(pickle.dumps(pack))
    assert copy._runners == [] and copy.jobs == [job] and copy.jobs_per_gpu == 2
    runner = pickle.loads(pickle.dumps(pack._runners[0]))
    assert runner.env == {'A': '1'} and runner._stop_signal is None and runner.pid is None
    assert SlurmOptions(gpus_per_node=0, jobs_per_gpu=2).jobs_per_task == 2
    assert SlurmOptions(gpus_per_node=4, jobs_per_gpu=2).jobs_per_task == 8


def test_a_refused_gpu_request_says_what_to_pass():
    error = RuntimeError('sbatch: error: Invalid generic resource (gres) specification\n')
    message = _refusal(error, SlurmOptions(gpus_per_node=1, partition='debug'))
    assert message.startswith('sbatch refused --gpus_per_node 1: the partition debug has no GPU')
    assert 'pass --gpus_per_node 0' in message
    assert _refusal(RuntimeError('QOS max'), SlurmOptions()) == 'sbatch refused the jobs: QOS max'


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


def wait_until(condition, what, timeout_s=900):
    """Poll ``condition`` (a generous limit only guards against a hung test)."""
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.1)


# A main.py stand-in: records the environment it got, then waits to be released.
FAKE_MAIN = """
import json, os, sys, time
from pathlib import Path

group = next(a.split('=', 1)[1] for a in sys.argv if a.startswith('--run_group='))
names = ('CUDA_VISIBLE_DEVICES', 'XLA_PYTHON_CLIENT_MEM_FRACTION', 'XLA_PYTHON_CLIENT_PREALLOCATE')
Path('started', group).write_text(json.dumps({n: os.environ.get(n) for n in names}))
while not Path('release', group).exists():
    time.sleep(0.02)
"""


@pytest.mark.slow
def test_local_launcher_gives_each_job_a_gpu_as_one_frees_up(tmp_path, monkeypatch):
    for name in gpus.MEMORY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / 'repo'
    for sub in ('started', 'release'):
        (root / sub).mkdir(parents=True)
    (root / 'main.py').write_text(FAKE_MAIN)
    sweep = spec.load_sweep(toy_sweep(tmp_path, grid={'agent.q_coef': [1, 2, 3, 4, 5]}))
    jobs = spec.expand(sweep, str(tmp_path))
    sweep_dir = spec.sweep_dir(str(tmp_path), sweep)
    said = []
    launcher = LocalLauncher(
        jobs, sweep_dir, str(root), gpus.make_slots(H200[:2], 2, 'share', 0), said.append
    )
    results = {}
    thread = threading.Thread(target=lambda: results.update(launcher.run()))
    thread.start()

    def started():
        return {p.name: json.loads(p.read_text()) for p in (root / 'started').iterdir()}

    try:
        # Two GPUs x 2 jobs: four run at once, two per GPU, each on one GPU with half its
        # memory (less the headroom); the fifth waits for a place.
        wait_until(lambda: len(started()) == 4, 'four jobs to start')
        first = started()
        assert sorted(env['CUDA_VISIBLE_DEVICES'] for env in first.values()) == ['0', '0', '1', '1']
        assert {env['XLA_PYTHON_CLIENT_MEM_FRACTION'] for env in first.values()} == {'0.450'}
        assert jobs[4].run_group not in first
        freed = next(g for g, env in first.items() if env['CUDA_VISIBLE_DEVICES'] == '1')
        (root / 'release' / freed).write_text('')
        wait_until(lambda: len(started()) == 5, 'the fifth job to take the freed place')
        assert started()[jobs[4].run_group]['CUDA_VISIBLE_DEVICES'] == '1'
    finally:
        for job in jobs:
            (root / 'release' / job.run_group).write_text('')
        thread.join()
    assert sorted(results) == sorted(job.key for job in jobs)
    assert f'[5/5] start    {jobs[4].key} on GPU 1' in said
    log = Path(job_dir(sweep_dir, jobs[4]), 'log.txt').read_text()
    assert 'CUDA_VISIBLE_DEVICES=1, XLA_PYTHON_CLIENT_MEM_FRACTION=0.450)' in log
    state = json.loads(Path(job_dir(sweep_dir, jobs[4]), STATE_FILE).read_text())
    assert state['env'] == {'CUDA_VISIBLE_DEVICES': '1', 'XLA_PYTHON_CLIENT_MEM_FRACTION': '0.450'}


def launch_in_background(path, save_dir):
    """``python -m drol_jax.sweep PATH`` as its own process (output in a pipe)."""
    command = [sys.executable, '-m', 'drol_jax.sweep', path, '--save_dir', str(save_dir)]
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def end(launcher):
    """Wait for a launcher; if the test failed before stopping it, stop it and its jobs."""
    if launcher.poll() is None:
        launcher.send_signal(signal.SIGINT)
        try:
            return launcher.communicate(timeout=600)[0]
        except subprocess.TimeoutExpired:
            launcher.send_signal(signal.SIGINT)  # The second one kills its jobs.
    return launcher.communicate()[0]


@pytest.mark.slow
def test_sigint_to_the_launcher_stops_its_jobs_and_a_relaunch_resumes(tmp_path):
    # Never ending on its own: it stops only because of the signal.
    flags = {'offline_steps': 10_000_000, 'log_interval': 50, 'eval_interval': 0}
    path = toy_sweep(tmp_path, grid={'agent.q_coef': [0.5, 1.0]}, flags=flags)
    sweep = spec.load_sweep(path)
    first, second = spec.expand(sweep, str(tmp_path))
    sweep_dir = spec.sweep_dir(str(tmp_path), sweep)
    train_csv = Path(first.run_dirs[0], 'train.csv')
    launcher = launch_in_background(path, tmp_path)
    try:
        wait_until(train_csv.exists, 'training to start')
        launcher.send_signal(signal.SIGINT)  # To the launcher's PID only, not its group.
        out = launcher.communicate(timeout=600)[0]
    finally:
        out = end(launcher) if launcher.returncode is None else out
    assert launcher.returncode == 130, out
    assert 'received SIGINT: forwarded it to 1 running job(s) (main.py pid ' in out
    assert '1 job(s) not started stay pending' in out and 'finished: 1 pending, 1 stopped' in out
    stopped, pending = sweep_statuses(sweep_dir, [first, second])
    assert stopped.state == 'stopped' and stopped.progress.checkpoint_step is not None
    assert (pending.state, pending.detail.split(' (')[0]) == ('pending', 'not started')
    saved = stopped.progress.checkpoint_step

    relaunch = launch_in_background(path, tmp_path)
    log = Path(job_dir(sweep_dir, first), 'log.txt')
    try:
        wait_until(lambda: f'from step {saved}.' in log.read_text(), 'the job to resume')
        wait_until(lambda: max(csv_steps(train_csv)) > saved, 'the resumed job to train')
        relaunch.send_signal(signal.SIGINT)
        out = relaunch.communicate(timeout=600)[0]
    finally:
        out = end(relaunch) if relaunch.returncode is None else out
    assert relaunch.returncode == 130, out
    assert 'jobs: 2 to launch' in out
    (status,) = sweep_statuses(sweep_dir, [first])
    assert status.state == 'stopped' and status.progress.checkpoint_step > saved


@pytest.mark.slow
def test_sigterm_during_start_up_stops_the_job_and_it_relaunches(tmp_path, capsys):
    path = toy_sweep(tmp_path, agents=(write_agent_file(tmp_path, 'held_drol.py', HELD_AGENT),))
    sweep = spec.load_sweep(path)
    (job,) = spec.expand(sweep, str(tmp_path))
    sweep_dir = spec.sweep_dir(str(tmp_path), sweep)
    state = Path(job_dir(sweep_dir, job), STATE_FILE)
    launcher = launch_in_background(path, tmp_path)
    try:
        wait_until(lambda: 'main_pid' in (read_json(state) or {}), 'main.py to start')
        os.kill(read_json(state)['main_pid'], signal.SIGTERM)  # In its imports or held in create().
        out = launcher.communicate(timeout=600)[0]
    finally:
        out = end(launcher) if launcher.returncode is None else out
    assert launcher.returncode == 0 and 'finished: 1 stopped' in out, out
    (status,) = sweep_statuses(sweep_dir, [job])
    assert status.state == 'stopped' and 'SIGTERM' in status.detail, status
    (tmp_path / 'RELEASE').touch()
    assert cli.main([path, '--save_dir', str(tmp_path)]) == 0
    assert 'finished: 1 done' in capsys.readouterr().out


@pytest.mark.slow
def test_device_check_quick_writes_what_the_dry_run_reads(tmp_path, capsys):
    command = [sys.executable, 'bench/device_check.py', '--quick', '--out', str(tmp_path)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    result = json.loads((tmp_path / 'device_check.json').read_text())
    assert result['tool'] == 'bench/device_check.py' and result['quick'] and not result['skipped']
    measured = {
        (r['agent'], r['num_candidates'], r['mode'], r['seeds'], r['jobs_per_gpu'])
        for r in result['rates']
    }
    expected = {
        (agent, k, mode, seeds, 1)
        for agent, k in (('drol', 16), ('drol', 64), ('fql', None))
        for mode in ('fused', 'host')
        for seeds in (1, 2)
    }
    assert measured == expected | {('drol', 16, 'fused', 2, 2)}
    assert all(r['seconds_per_update'] > 0 and r['compile_s'] >= 0 for r in result['rates'])
    assert result['evaluation']['env_steps_per_second'] > 0
    assert len(result['targets']) == 7
    assert {t['verdict'] for t in result['targets']} <= {'pass', 'MISSED'}
    assert all(t['bottleneck'] != '-' for t in result['targets'] if t['verdict'] == 'MISSED')
    report = (tmp_path / 'device_check.md').read_text()
    assert '## Targets' in report and '| DROL(64) |  host |' in report

    sweep = toy_sweep(tmp_path)
    args = ['--device_check', str(tmp_path / 'device_check.json'), '--gpus', '2']
    assert cli.main([sweep, '--dry_run', *args, '--jobs_per_gpu', '2']) == 0
    out = capsys.readouterr().out
    assert 'rates: measured by bench/device_check.py --quick (reduced sizes) on cpu' in out
    assert 'plan: 2 GPU(s) x 2 job(s) per GPU (4 jobs at a time' in out
