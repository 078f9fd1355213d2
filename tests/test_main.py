"""main.py end to end on the toy task: an agent file and a third party's; one-line errors.

Each ``python main.py`` costs 1-2 s of imports, so the fast tier keeps only the errors that
only main.py's flag parsing can produce (the others are checked in-process in test_run.py).
"""

import functools
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import (
    REPO,
    THIRD_PARTY_AGENT,
    TINY,
    agent_file,
    check_toy_run,
    one_line_error,
    run_main,
    write_agent_file,
)


# The panel's agent files (DROL, FQL, IQL, ReBRAC, IFQL offline; SAC online as RLPD) also run
# through main.py, with these checks, in test_sweep's toy-panel test.
@pytest.mark.slow
@pytest.mark.parametrize('path', ['agents/sac.py', 'third-party'], ids=['sac', 'third-party'])
def test_main_trains_and_evaluates_end_to_end(path, tmp_path):
    if path == 'third-party':
        path = write_agent_file(tmp_path, 'plain_bc.py', THIRD_PARTY_AGENT)
        extra = []
    else:
        extra = TINY
    agent_name = agent_file(path).default_config()['agent_name']
    result = run_main(
        f'--agent={path}',
        '--env_name=toy-multimodal',
        '--offline_steps=40',
        '--log_interval=20',
        '--eval_interval=20',
        '--save_interval=40',
        '--eval_episodes=5',
        f'--save_dir={tmp_path}',
        '--run_group=e2e',
        *extra,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / 'e2e' / 'toy-multimodal' / agent_name / 'seed0'
    check_toy_run(str(run_dir), agent_name, result.stdout, steps=40)
    assert 'Traceback' not in result.stderr


NO_BATCH_SIZE_AGENT = THIRD_PARTY_AGENT.replace(
    "dict(agent_name='plainbc', lr=1e-3, batch_size=32)", "dict(agent_name='plainbc', lr=1e-3)"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ('args', 'expected'),
    [
        (['--env_name=cube-singel'], "did you mean 'cube-single'"),
        (['--agent=agents/nope.py'], 'does not exist'),
        (['--agent.num_candidates=0'], 'num_candidates must be an integer >= 1'),
        (['--agent.batch_size=0'], 'batch_size must be an integer >= 1'),
        (['--offline_steps=-5'], 'offline_steps must be >= 0'),
        (['--agent.bc_coef=-1'], 'bc_coef must be >= 0'),
        (['--eval_episodes=-1'], 'eval_episodes must be >= 0'),
        (['--log_interval=0'], '--log_interval must be >= 1, got 0.'),
        (['--seed=-1'], '--seed must be >= 0, got -1.'),
        (['--preset=bogus'], 'preset'),
        (['--agent.nonexistent=1'], "unknown agent hyperparameter 'nonexistent'"),
        (['--agent.bc_cof=3'], "Did you mean 'bc_coef'"),
        (['--agent=nope.py', '--agent.lr=3'], "--agent file 'nope.py' does not exist."),
        (['--save_dir={tmp}/a_file'], 'is a file, not a folder'),
        (['--save_dir={tmp}/a_file/below'], 'is not a writable folder'),
        (['--agent={tmp}/no_batch.py'], "the agent config has no 'batch_size' entry"),
        # Issue 14.6: a file that is not Python, and a data flag the toy task cannot honour.
        (['--agent=README.md'], "--agent file 'README.md' is not a Python file"),
        (['--dataset_path={tmp}/data.npz'], 'does not apply to the toy tasks'),
    ],
)
def test_bad_input_is_one_clear_line(args, expected, tmp_path):
    (tmp_path / 'a_file').write_text('not a folder')
    write_agent_file(tmp_path, 'no_batch.py', NO_BATCH_SIZE_AGENT)
    args = [a.replace('{tmp}', str(tmp_path)) for a in args]
    full = ['--agent=agents/drol.py', '--env_name=toy-multimodal', f'--save_dir={tmp_path}', *args]
    # A later flag wins in absl, so the case's own --agent/--env_name override the defaults.
    line = one_line_error(run_main(*full, timeout=120))
    assert expected.lower() in line.lower(), line


def test_flag_parsing_errors_are_one_clear_line(tmp_path):
    """The two agent-flag mistakes only main.py's parser sees (run concurrently: ~2 s)."""
    cases = {
        "unknown agent hyperparameter 'nonexistent' in --agent.nonexistent.": [
            '--agent.nonexistent=1'
        ],
        "--agent file 'nope.py' does not exist.": ['--agent=nope.py', '--agent.lr=3'],
    }
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': REPO}
    processes = {
        expected: subprocess.Popen(
            [sys.executable, os.path.join(REPO, 'main.py'), f'--save_dir={tmp_path}', *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for expected, args in cases.items()
    }
    for expected, process in processes.items():
        out, err = process.communicate(timeout=120)
        result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
        line = one_line_error(result)
        assert line == f'error: {expected}' or line.startswith(f'error: {expected} '), line


@pytest.mark.slow
def test_agent_file_without_interface(tmp_path):
    bad = tmp_path / 'not_an_agent.py'
    bad.write_text(
        'import ml_collections\n\n\ndef get_config():\n'
        "    return ml_collections.ConfigDict(dict(agent_name='x', batch_size=4))\n"
    )
    line = one_line_error(run_main(f'--agent={bad}', '--env_name=toy-multimodal', timeout=120))
    assert 'create, update, total_loss, sample_actions' in line


def test_a_stop_during_dataset_generation_exits_128_plus_the_signal(monkeypatch, capsys):
    """A signal that stopped the start-up (here: data regeneration) is no error (issue 14.5)."""
    import main
    from drol_jax.errors import Interrupted

    def stopped(settings):
        raise Interrupted('SIGTERM stopped the generation of cube-single-play-v0: 3 of 9 kept.', 15)

    monkeypatch.setattr(main.train, 'run', stopped)
    main.FLAGS.unparse_flags()
    main.FLAGS(['main.py', f'--agent={REPO}/agents/drol.py', '--env_name=toy-multimodal'])
    try:
        assert main.train_from_flags() == 143
    finally:
        main.FLAGS.unparse_flags()
    err = capsys.readouterr().err.splitlines()
    assert err == ['Stopped: SIGTERM stopped the generation of cube-single-play-v0: 3 of 9 kept.']


# An agent whose create() never returns: the run is held in its start-up, before training.
STUCK_AGENT = THIRD_PARTY_AGENT.replace(
    '    def create(cls, seed, ex_observations, ex_actions, config):\n',
    '    def create(cls, seed, ex_observations, ex_actions, config):\n'
    '        import os, time\n'
    "        open(os.environ['CREATING'], 'w').close()\n"
    '        while True:\n'
    '            time.sleep(0.05)\n',
)


def catches_sigterm(pid):
    """Whether the process has a handler for SIGTERM (Linux: the SigCgt mask in /proc)."""
    with open(f'/proc/{pid}/status') as f:
        caught = next(line for line in f if line.startswith('SigCgt:')).split()[1]
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


@pytest.mark.slow
def test_a_signal_during_start_up_is_one_line_and_128_plus_signum(tmp_path):
    """Before training there is nothing to save: one line, exit 143/130, no traceback (14.5).

    Three runs at once: SIGTERM during the imports (as soon as the handler is in place), and
    SIGTERM and SIGINT while the agent is being created.
    """
    assert "os.environ['CREATING']" in STUCK_AGENT  # The agent really blocks in create().
    path = write_agent_file(tmp_path, 'stuck.py', STUCK_AGENT)
    cases = [(signal.SIGTERM, 'imports'), (signal.SIGTERM, 'creation'), (signal.SIGINT, 'creation')]
    processes = []
    for index, (signum, moment) in enumerate(cases):
        marker = tmp_path / f'creating{index}'
        env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': REPO, 'CREATING': str(marker)}
        args = [f'--agent={path}', '--env_name=toy-multimodal', f'--save_dir={tmp_path}/{index}']
        process = subprocess.Popen(
            [sys.executable, os.path.join(REPO, 'main.py'), '--progress=false', *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = (
            functools.partial(catches_sigterm, process.pid)
            if moment == 'imports'
            else marker.exists
        )
        processes.append((signum, ready, process))
    for signum, ready, process in processes:
        deadline = time.time() + 240
        while not ready():
            assert process.poll() is None and time.time() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signum)
    for signum, _, process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 128 + signum, (process.returncode, err[-2000:])
        assert err.strip().splitlines() == [
            f'Stopped by {signal.Signals(signum).name} before training started (nothing to '
            'save); run the same command again to start.'
        ], err[-2000:]
        assert 'Traceback' not in out + err


# The signal lands in a finaliser, where Python ignores the SystemExit the handler raises.
SWALLOWING_START_UP = """
import os, sys, time
from drol_jax import stopping

stopping.exit_quietly_before_training()
stopping.EXIT_GRACE_S = 0.5


class Finalised:
    def __del__(self):
        open(sys.argv[1], 'w').close()
        time.sleep(120)


Finalised()
while True:  # Without the grace timer the start-up would go on here for ever.
    time.sleep(0.05)
"""


@pytest.mark.slow
def test_a_signal_whose_exit_python_swallows_still_ends_with_128_plus_signum(tmp_path):
    """Seen once under load: SLURM's scancel during start-up, then SIGKILL, recorded as failed."""
    marker = tmp_path / 'in_finaliser'
    process = subprocess.Popen(
        [sys.executable, '-c', SWALLOWING_START_UP, str(marker)],
        cwd=REPO,
        env={**os.environ, 'PYTHONPATH': REPO},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not marker.exists():
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()  # Only where the test failed: it has exited otherwise.
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.startswith('Stopped by SIGTERM before training started'), err
