"""Speed paths give the same results as the reference paths.

(i) fused device-resident training equals the FQL-style host loop; (ii) vectorized evaluation
equals sequential evaluation; (iii) the update-speed benchmark's smoke run works.

JAX and the agents are imported inside the tests that use them: evaluation workers unpickle
``VaryingLengthEnv`` by importing this module, and they start much faster without JAX. The
tests that start worker processes or subprocesses are in the slow tier.
"""

import functools
import os
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest

from bench import eval_speed
from drol_jax import evaluation
from drol_jax.envs import toy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------
# (i) Fused blocks reproduce the host loop.


def agent_paths():
    """The agent files (globbed by the helpers); imported lazily, see the module docstring.

    DROL's variants (``drol_<variant>.py``) run in the slow tier: the fast tier checks them
    against DROL itself (tests/test_variants.py).
    """
    import glob

    paths = glob.glob(os.path.join(REPO, 'agents', '*.py'))
    return [
        pytest.param(p, id=name[:-3], marks=[pytest.mark.slow] if name.startswith('drol_') else [])
        for p in sorted(paths)
        if not (name := os.path.basename(p)).startswith('_')
    ]


@pytest.mark.parametrize('path', agent_paths())
def test_fused_block_matches_host_loop(path):
    import chex
    import jax
    from helpers import tiny_agent
    from references import host_loop_updates

    from drol_jax.data import random_transitions, to_device
    from drol_jax.updates import make_train_block, stack_agents, unstack_agent

    tiny = tiny_agent(path)
    agent, batch_size, num_updates = tiny.agent, tiny.config.batch_size, 50
    # Random transitions: most bootstrap (mask 1), so the target critic's path counts too.
    dataset = random_transitions(200, 2, 2, seed=0)
    key = jax.random.PRNGKey(7)

    host_agent, host_key, host_infos = host_loop_updates(
        agent, dataset, key, num_updates, batch_size
    )
    block = make_train_block(batch_size)
    result = block(stack_agents([agent]), key[None], to_device(dataset), num_updates)

    assert len(host_infos) == num_updates
    np.testing.assert_array_equal(np.asarray(result.keys[0]), np.asarray(host_key))
    assert all(int(v[0]) == -1 for v in result.first_bad.values())
    fused_agent = unstack_agent(result.agents, 0)
    chex.assert_trees_all_close(
        fused_agent.network.params, host_agent.network.params, rtol=1e-4, atol=1e-5
    )
    chex.assert_trees_all_close(
        unstack_agent(result.last_info, 0), host_infos[-1], rtol=1e-4, atol=1e-5
    )
    # The loss trajectory starts from the same first update too (metrics before any drift).
    first = block(stack_agents([agent]), key[None], to_device(dataset), 1)
    chex.assert_trees_all_close(unstack_agent(first.last_info, 0), host_infos[0], rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# (ii) Vectorized evaluation equals sequential evaluation.


class VaryingLengthEnv(gym.Env):
    """Episodes whose length (1..5 steps) depends on the reset seed; reward depends on actions.

    Module-level, so worker processes can unpickle its factory.
    """

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._left = int(self.np_random.integers(1, 6))
        self._state = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return self._state.copy(), {}

    def step(self, action):
        reward = float(np.dot(self._state[:2], action) + 0.1 * self._left)
        self._state = np.roll(self._state, 1) * 0.9
        self._left -= 1
        done = self._left == 0
        return self._state.copy(), reward, done, False, {'success': float(reward > 0)}


def deterministic_policy(observations, episodes, steps):
    return np.tanh(observations[:, :2] * 1.7 + observations[:, 2:3])


def keyed_stochastic_policy(observations, episodes, steps):
    """Random actions that depend only on (episode, step), as the training loop's policy."""
    return np.stack(
        [
            np.random.default_rng([11, int(e), int(t)]).uniform(-1, 1, 2)
            for e, t in zip(episodes, steps, strict=True)
        ]
    )


def sequential_episodes(make_env, policy, num_episodes, base_seed):
    env = make_env()
    return [evaluation.run_episode(env, policy, e, base_seed)[0] for e in range(num_episodes)]


@pytest.mark.slow
@pytest.mark.parametrize('policy', [deterministic_policy, keyed_stochastic_policy])
def test_vectorized_matches_sequential_with_varying_lengths(policy):
    make_env = VaryingLengthEnv
    expected = sequential_episodes(make_env, policy, 9, base_seed=3)
    assert len({e['episode.length'] for e in expected}) > 1  # Lengths really vary.
    got = eval_speed.run_episodes_vectorized(make_env, policy, 9, 3, num_envs=3, progress=False)
    assert got == expected
    summary = eval_speed.evaluate_vectorized(make_env, policy, 9, 3, num_envs=2, progress=False)
    assert summary == evaluation.summarize(expected)


@pytest.mark.slow
def test_vectorized_matches_sequential_on_toy_env():
    make_env = functools.partial(toy.ToyEnv, 'toy-multimodal')
    sequential = evaluation.evaluate_sequential(
        make_env(), keyed_stochastic_policy, 6, 0, progress=False
    )
    vectorized = eval_speed.evaluate_vectorized(
        make_env, keyed_stochastic_policy, 6, 0, num_envs=2, progress=False
    )
    assert vectorized == sequential


def cube_policy(observations, episodes, steps):
    """Fixed deterministic policy that moves the arm around (observation-dependent)."""
    return np.clip(np.sin(observations[:, :5] * 3.0 + steps[:, None] * 0.1), -1, 1)


@pytest.mark.slow
def test_vectorized_matches_sequential_on_cube_single():
    pytest.importorskip('ogbench')
    import ogbench

    make_env = functools.partial(
        ogbench.make_env_and_datasets,
        'cube-single-play-singletask-v0',
        env_only=True,
        max_episode_steps=30,
    )
    started = time.perf_counter()
    expected = sequential_episodes(make_env, cube_policy, 3, base_seed=1)
    got = eval_speed.run_episodes_vectorized(
        make_env, cube_policy, 3, 1, num_envs=2, progress=False
    )
    assert got == expected
    assert time.perf_counter() - started < 60  # Keeps the suite fast; normally a few seconds.


@pytest.mark.slow
def test_persistent_workers_are_reusable():
    expected = sequential_episodes(VaryingLengthEnv, keyed_stochastic_policy, 5, base_seed=2)
    with evaluation.EnvWorkers(VaryingLengthEnv, num_envs=4, num_workers=2) as workers:
        for _ in range(2):
            assert workers.run_episodes(keyed_stochastic_policy, 5, 2, progress=False) == expected


@pytest.mark.slow
def test_worker_failure_raises_and_closes():
    with pytest.raises(RuntimeError, match='failed'):
        eval_speed.evaluate_vectorized(
            functools.partial(toy.ToyEnv, 'no-such-task'),
            deterministic_policy,
            2,
            0,
            2,
            None,
            False,
        )


# ---------------------------------------------------------------------------------------------
# (iii) The benchmark's smoke run.


# DROL (with its naive reference loss), FQL and a variant file: the benchmark's code paths. Every
# agent file's update and fused block are checked above; the test below checks that the
# benchmark gives every file its rows.
SMOKE_AGENTS = ('drol', 'fql', 'drol_soft')


@pytest.mark.slow
def test_update_speed_quick_runs():
    # The session's fast-compiling XLA flags (conftest.py) carry over: the smoke run times nothing.
    bench = os.path.join(REPO, 'bench', 'update_speed.py')
    result = subprocess.run(
        [sys.executable, bench, '--quick', '--agents', *SMOKE_AGENTS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Each agent gets a host and a fused row, and a fused-over-host ratio; DROL its naive row.
    rows = [line.split('|') for line in result.stdout.splitlines() if line.startswith('|')]
    cells = [[c.strip() for c in row[1:-1]] for row in rows]
    from bench import update_speed

    names = {update_speed.display_name(name) for name in SMOKE_AGENTS}
    modes = {name: {c[1] for c in cells if c[0] == name and len(c) == 10} for name in names}
    assert modes == {
        **dict.fromkeys(names, {'host', 'fused'}),
        'DROL': {'host', 'fused', 'naive-allq'},
    }
    ratios = {c[0] for c in cells if len(c) == 5 and c[2].endswith('x')}
    assert ratios == names


def test_the_update_benchmark_has_rows_for_every_agent_file():
    from helpers import agent_file

    from bench import update_speed

    paths = [param.values[0] for param in agent_paths()]  # Variants included.
    names = {agent_file(p).default_config()['agent_name'] for p in paths}
    assert set(update_speed.AGENT_FILES) == names and len(names) >= 10
    rows = update_speed.rows_to_run(update_speed.parse_args(['--quick']))
    for name in names:
        assert {mode for kind, mode, _ in rows if kind == name} >= {'host', 'fused'}, name
