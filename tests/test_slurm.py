"""The SLURM launcher on a real one-node cluster (slurm-wlm + munge, see tests/slurm_cluster.py).

Skipped with the reason where the daemons cannot run (not root, packages missing); ``.ci/run``
installs the packages so that CI runs these tests.
"""

import csv
import json
import time
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, missing_requirement
from test_sweep import toy_sweep

from drol_jax.sweep import cli, spec
from drol_jax.sweep.jobs import LOG_FILE, SUBMITTED_FILE, job_dir
from drol_jax.sweep.status import sweep_statuses

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    reason = missing_requirement()
    if reason:
        pytest.skip(f'no SLURM cluster here: {reason}')
    slurm = SlurmCluster(tmp_path_factory.mktemp('slurm')).start()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in slurm.env().items():
            patch.setenv(name, value)
        try:
            yield slurm
        finally:
            slurm.stop()


def wait_for(condition, what, cluster, timeout_s=600):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f'timed out waiting for {what}\n{cluster.logs()}')


def launch_on_slurm(path, save_dir):
    args = ['--launcher', 'slurm', '--gpus_per_node', '0', '--cpus_per_task', '1', '--time', '30']
    return cli.main([path, *args, '--save_dir', str(save_dir)])


def steps_of(path):
    with open(path) as f:
        return [int(float(row['step'])) for row in csv.DictReader(f)]


def test_toy_sweep_through_the_slurm_launcher(cluster, tmp_path, capsys):
    path = toy_sweep(tmp_path, agents=('agents/drol.py', 'agents/fql.py'))
    sweep = spec.load_sweep(path)
    jobs = spec.expand(sweep, str(tmp_path))
    sweep_dir = spec.sweep_dir(str(tmp_path), sweep)
    assert launch_on_slurm(path, tmp_path) == 0
    assert 'submitted 2 jobs as SLURM array' in capsys.readouterr().out

    def all_done():
        return all(s.state == 'done' for s in sweep_statuses(sweep_dir, jobs))

    wait_for(all_done, 'both jobs to finish', cluster)
    for job in jobs:
        assert json.loads(Path(job_dir(sweep_dir, job), SUBMITTED_FILE).read_text())[
            'launcher'
        ] == ('slurm')
        for run_dir in job.run_dirs:
            summary = json.loads(Path(run_dir, 'summary.json').read_text())
            assert summary['complete'] and summary['step'] == 200
            assert steps_of(Path(run_dir, 'eval.csv')) == [1, 100, 200]

    assert cli.main(['status', sweep_dir]) == 0
    report = capsys.readouterr().out
    assert 'totals: 2 done, 0 running, 0 pending, 0 stopped, 0 failed (2 jobs, 4 runs)' in report
    # Launching again finds nothing to do.
    assert launch_on_slurm(path, tmp_path) == 0
    assert 'jobs: 0 to launch, 2 done (skipped)' in capsys.readouterr().out


def test_requeued_job_resumes_from_its_checkpoint(cluster, tmp_path, capsys):
    # Long enough (about 30 s of training here) for both interruptions to land mid-run on
    # faster machines too.
    total, log_every = 30_000, 100
    flags = {
        'offline_steps': total,
        'log_interval': log_every,
        'eval_interval': 10_000,
        'save_interval': 1_000_000,  # no periodic checkpoint: every resume uses a signal's
    }
    path = toy_sweep(tmp_path, flags=flags)
    sweep = spec.load_sweep(path)
    (job,) = spec.expand(sweep, str(tmp_path))
    sweep_dir = spec.sweep_dir(str(tmp_path), sweep)
    assert launch_on_slurm(path, tmp_path) == 0
    folder = Path(job_dir(sweep_dir, job))
    slurm_id = json.loads((folder / SUBMITTED_FILE).read_text())['slurm_job_id']
    train_csv = Path(job.run_dirs[0], 'train.csv')

    def reached(step):
        return lambda: train_csv.exists() and max(steps_of(train_csv), default=0) >= step

    def queue_state():
        result = cluster.run(['squeue', '-h', '-r', '-o', '%T', f'--jobs={slurm_id}'], check=False)
        return result.stdout.strip()

    def resumed(times):
        return lambda: (folder / LOG_FILE).read_text().count('Resuming ') >= times

    def requeue_and_release(interrupt):
        interrupt()
        wait_for(lambda: queue_state() == 'PENDING', 'the job to be requeued', cluster)
        # SLURM holds a requeued job for two minutes; let it start now.
        cluster.run(['scontrol', 'update', f'JobId={slurm_id}', 'StartTime=now'])

    # A preemption as SLURM does it: SIGTERM to every process of the job, then requeue.
    wait_for(reached(2_000), 'training to pass step 2000', cluster)
    requeue_and_release(lambda: cluster.run(['scontrol', 'requeue', slurm_id]))
    wait_for(resumed(1), 'the requeued job to resume', cluster)
    # A time limit as submitit sees it: SIGUSR2, the job checkpoints and requeues itself.
    wait_for(reached(12_000), 'training to pass step 12000', cluster)
    requeue_and_release(lambda: cluster.run(['scancel', '--signal=USR2', slurm_id]))
    wait_for(resumed(2), 'the job to resume after SIGUSR2', cluster)
    wait_for(lambda: sweep_statuses(sweep_dir, [job])[0].state == 'done', 'the run', cluster)

    log = (folder / LOG_FILE).read_text()
    starts = [
        int(line.split('from step ')[1].rstrip('.'))
        for line in log.splitlines()
        if line.startswith('Resuming ')
    ]
    assert len(starts) == 2 and 2_000 <= starts[0] < starts[1] < total
    for run_dir in job.run_dirs:
        assert steps_of(Path(run_dir, 'train.csv')) == list(range(log_every, total + 1, log_every))
        assert steps_of(Path(run_dir, 'eval.csv')) == [1, 10_000, 20_000, 30_000]
        assert json.loads(Path(run_dir, 'summary.json').read_text())['complete']
