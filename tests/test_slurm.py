"""The SLURM launcher on a real one-node cluster (slurm-wlm + munge, see tests/slurm_cluster.py).

Skipped with the reason where the daemons cannot run (not root, packages missing); ``.ci/run``
installs the packages so that CI runs these tests.
"""

import csv
import json
import time
from pathlib import Path

import pytest
from helpers import HELD_AGENT, write_agent_file
from slurm_cluster import SlurmCluster, missing_requirement
from test_sweep import toy_sweep

from drol_jax.sweep import cli, spec
from drol_jax.sweep.jobs import LOG_FILE, STATE_FILE, SUBMITTED_FILE, job_dir
from drol_jax.sweep.status import sweep_statuses

# One cluster for the whole file: under pytest-xdist its tests share one worker (--dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group('slurm')]


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


def launch_on_slurm(path, save_dir, *extra):
    args = ['--launcher', 'slurm', '--gpus_per_node', '0', '--cpus_per_task', '1', '--time', '30']
    return cli.main([path, *args, *extra, '--save_dir', str(save_dir)])


def queue_is_busy(cluster):
    """Whether SLURM lists a job that is pending, running or completing."""
    return bool(cluster.run(['squeue', '--noheader']).stdout.strip())


def launch_one_job(tmp_path, flags=None, agent='agents/drol.py'):
    """Launch a one-job toy sweep on SLURM: its path, job, sweep folder, job folder, SLURM id."""
    path = toy_sweep(tmp_path, flags=flags, agents=(agent,))
    sweep = spec.load_sweep(path)
    (job,) = spec.expand(sweep, str(tmp_path))
    sweep_dir = spec.sweep_dir(str(tmp_path), sweep)
    assert launch_on_slurm(path, tmp_path) == 0
    folder = Path(job_dir(sweep_dir, job))
    slurm_id = json.loads((folder / SUBMITTED_FILE).read_text())['slurm_job_id']
    return path, job, sweep_dir, folder, slurm_id


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
    # Each interruption waits for training to be well under way (1000 updates past the start or
    # the resume, about a second here), and the run is long enough (about 10 s of training here)
    # that both still land mid-run on a machine several times faster.
    total, log_every = 10_000, 100
    flags = {
        'offline_steps': total,
        'log_interval': log_every,
        'eval_interval': 5_000,
        'save_interval': 1_000_000,  # no periodic checkpoint: every resume uses a signal's
    }
    _, job, sweep_dir, folder, slurm_id = launch_one_job(tmp_path, flags)
    train_csv = Path(job.run_dirs[0], 'train.csv')

    def reached(step):
        return lambda: train_csv.exists() and max(steps_of(train_csv), default=0) >= step

    def resume_steps():
        log = (folder / LOG_FILE).read_text()
        return [
            int(line.split('from step ')[1].rstrip('.'))
            for line in log.splitlines()
            if line.startswith('Resuming ')
        ]

    def resumed(times):
        return lambda: len(resume_steps()) >= times

    # SLURM holds a requeued job for the credential lifetime (5 s on the test cluster), so
    # slurmd is done with the previous run before the job starts again.
    # A preemption as SLURM does it: SIGTERM to every process of the job, then requeue.
    wait_for(reached(1_000), 'training to pass step 1000', cluster)
    cluster.run(['scontrol', 'requeue', slurm_id])
    wait_for(resumed(1), 'the requeued job to resume', cluster)
    # A time limit as submitit sees it: SIGUSR2, the job checkpoints and requeues itself.
    wait_for(reached(resume_steps()[0] + 1_000), 'training to pass the resume by 1000', cluster)
    cluster.run(['scancel', '--signal=USR2', slurm_id])
    wait_for(resumed(2), 'the job to resume after SIGUSR2', cluster)
    wait_for(lambda: sweep_statuses(sweep_dir, [job])[0].state == 'done', 'the run', cluster)

    starts = resume_steps()
    assert len(starts) == 2 and 1_000 <= starts[0] < starts[1] < total
    for run_dir in job.run_dirs:
        assert steps_of(Path(run_dir, 'train.csv')) == list(range(log_every, total + 1, log_every))
        assert steps_of(Path(run_dir, 'eval.csv')) == [1, 5_000, 10_000]
        assert json.loads(Path(run_dir, 'summary.json').read_text())['complete']


def test_packed_jobs_share_a_task_and_requeue_and_rerun_one_by_one(cluster, tmp_path, capsys):
    # Three jobs, two per array task (no GPU on the test node: side by side on its CPUs).
    flags = {'offline_steps': 2_000, 'log_interval': 100, 'eval_interval': 1_000}
    path = toy_sweep(tmp_path, grid={'agent.q_coef': [0.5, 1.0, 2.0]}, flags=flags)
    sweep = spec.load_sweep(path)
    jobs = spec.expand(sweep, str(tmp_path))
    sweep_dir = spec.sweep_dir(str(tmp_path), sweep)
    assert launch_on_slurm(path, tmp_path, '--jobs_per_gpu', '2') == 0
    assert 'submitted 3 jobs in 2 array tasks as SLURM array' in capsys.readouterr().out
    submitted = [
        json.loads(Path(job_dir(sweep_dir, job), SUBMITTED_FILE).read_text()) for job in jobs
    ]
    first, second = submitted[0]['slurm_job_id'], submitted[2]['slurm_job_id']
    assert submitted[1]['slurm_job_id'] == first != second
    assert submitted[0]['pack'] == [jobs[0].key, jobs[1].key]

    # Both jobs of the first task run at once; a requeue of the task resumes each of them.
    def reached(job, step):
        train_csv = Path(job.run_dirs[0], 'train.csv')
        return train_csv.exists() and max(steps_of(train_csv), default=0) >= step

    wait_for(lambda: reached(jobs[0], 300) and reached(jobs[1], 300), 'the pack', cluster)
    cluster.run(['scontrol', 'requeue', first])

    def log(job):
        return Path(job_dir(sweep_dir, job), LOG_FILE).read_text()

    wait_for(lambda: all('Resuming ' in log(job) for job in jobs[:2]), 'both to resume', cluster)

    def all_done():
        return all(s.state == 'done' for s in sweep_statuses(sweep_dir, jobs))

    wait_for(all_done, 'every job to finish', cluster)
    for job in jobs:
        for run_dir in job.run_dirs:
            assert steps_of(Path(run_dir, 'eval.csv')) == [1, 1_000, 2_000]
    # A re-run launches only what is not done: here one job whose run lost its summary (once
    # both array tasks have left the queue: a job of a live task is left alone).
    wait_for(lambda: not queue_is_busy(cluster), 'the array tasks to end', cluster)
    Path(jobs[1].run_dirs[0], 'summary.json').unlink()
    assert launch_on_slurm(path, tmp_path, '--jobs_per_gpu', '2') == 0
    assert 'jobs: 1 to launch, 2 done (skipped)' in capsys.readouterr().out
    wait_for(all_done, 'the re-run job to finish', cluster)
    assert log(jobs[1]).count('=== ') == 3 and log(jobs[0]).count('=== ') == 2


def test_job_cancelled_during_start_up_is_stopped_and_relaunches(cluster, tmp_path, capsys):
    agent = write_agent_file(tmp_path, 'held_drol.py', HELD_AGENT)
    path, job, sweep_dir, folder, slurm_id = launch_one_job(tmp_path, agent=agent)
    # As soon as main.py starts: the signal lands in its imports or while the agent is held.
    wait_for(lambda: (folder / STATE_FILE).exists(), 'main.py to start', cluster)
    cluster.run(['scancel', slurm_id])
    wait_for(
        lambda: sweep_statuses(sweep_dir, [job])[0].state not in ('running', 'pending'),
        'the cancelled job to end',
        cluster,
    )
    status = sweep_statuses(sweep_dir, [job])[0]
    assert status.state == 'stopped', (status, (folder / LOG_FILE).read_text())
    capsys.readouterr()
    (tmp_path / 'RELEASE').touch()
    assert launch_on_slurm(path, tmp_path) == 0
    assert 'jobs: 1 to launch' in capsys.readouterr().out
    wait_for(lambda: sweep_statuses(sweep_dir, [job])[0].state == 'done', 'the relaunch', cluster)


def test_gpus_on_a_node_without_gpus_is_one_error_line(cluster, tmp_path, capsys):
    path = toy_sweep(tmp_path)
    sweep = spec.load_sweep(path)
    (job,) = spec.expand(sweep, str(tmp_path))
    sweep_dir = spec.sweep_dir(str(tmp_path), sweep)
    state = Path(job_dir(sweep_dir, job), STATE_FILE)
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({'state': 'stopped', 'reason': 'an earlier attempt'}))
    # The default --gpus_per_node 1.
    status = cli.main([path, '--launcher', 'slurm', '--time', '30', '--save_dir', str(tmp_path)])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: sbatch refused --gpus_per_node 1'), err
    assert 'pass --gpus_per_node 0' in err[0]
    # Nothing submitted, nothing lost.
    assert json.loads(state.read_text())['reason'] == 'an earlier attempt'
    assert not Path(job_dir(sweep_dir, job), SUBMITTED_FILE).exists()
