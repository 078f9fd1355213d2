"""The D4RL family: names, FQL's processing, and loading tiny Minari datasets of the real envs."""

from __future__ import annotations

import pickle
import types

import numpy as np
import pytest

from drol_jax.envs import d4rl
from drol_jax.envs.base import ACTION_CLIP, DATASET_KEYS, DataOptions
from drol_jax.errors import DatasetError

ANTMAZE_ID = 'D4RL/antmaze/umaze-v1'
PEN_ID = 'D4RL/pen/human-v2'
LIMIT = ACTION_CLIP


def _episode(observations, actions, rewards, terminations, truncations):
    return types.SimpleNamespace(
        observations=observations,
        actions=np.asarray(actions, np.float64),
        rewards=np.asarray(rewards, np.float64),
        terminations=np.asarray(terminations, bool),
        truncations=np.asarray(truncations, bool),
    )


def _dict_obs(start, length):
    # Each key gets recognisable values so the flattening order can be read off the result.
    steps = np.arange(start, start + length + 1, dtype=np.float64)[:, None]
    return {
        'observation': np.hstack([steps, steps + 0.5]),
        'desired_goal': np.full((length + 1, 1), 100.0),
        'achieved_goal': -steps,
    }


# --- names -----------------------------------------------------------------------------------


def test_both_name_forms_resolve_to_the_d4rl_name():
    family = d4rl.FAMILY
    assert family.name == 'd4rl'
    assert family.resolve('antmaze-large-play-v2') == 'antmaze-large-play-v2'
    assert family.resolve('D4RL/antmaze/large-play-v1') == 'antmaze-large-play-v2'
    assert family.resolve('D4RL/pen/human-v2') == 'pen-human-v1'
    assert family.resolve('relocate-expert-v1') == 'relocate-expert-v1'
    assert family.resolve('cube-single-play-singletask-v0') is None
    assert family.resolve('antmaze-large-play-v0') is None
    assert len(d4rl.TASKS) == 18
    assert len(family.known_names()) == 36
    assert {task.domain for task in d4rl.TASKS} == set(d4rl.D4RL_REFERENCE_SCORES)


def test_registry_routes_d4rl_names_here():
    from drol_jax.envs import registry

    resolved = registry.resolve('D4RL/door/cloned-v2')
    assert resolved.family is d4rl.FAMILY and resolved.name == 'door-cloned-v1'
    assert resolved.task_family == 'door-cloned'
    assert registry.resolve('antmaze-large-play-v2').task_family == 'antmaze-large-play'
    assert registry.resolve('D4RL/pen/human-v2').task_family == 'pen-human'
    assert registry.resolve('antmaze-umaze-diverse-v2').task_family == 'antmaze-umaze-diverse'


def test_online_reward_shift_matches_the_dataset_convention():
    # AntMaze datasets store reward - 1; online rewards get the same shift, Adroit none.
    shifts = {task.d4rl_name: task.online_reward_shift for task in d4rl.TASKS}
    assert {n for n, shift in shifts.items() if shift == -1.0} == {
        t.d4rl_name for t in d4rl.TASKS if t.domain == 'antmaze'
    }
    assert {shift for n, shift in shifts.items() if not n.startswith('antmaze')} == {0.0}


# --- conversions on hand-made data -----------------------------------------------------------


def test_episodes_to_transitions_follows_fql_conventions(capsys):
    first = _episode(
        _dict_obs(0, 3),
        actions=[[2.0], [-3.0], [0.5]],
        rewards=[0.0, 0.0, 1.0],
        terminations=[False, False, True],
        truncations=[False, False, False],
    )
    second = _episode(
        _dict_obs(10, 2),
        actions=[[0.1], [1.0]],
        rewards=[0.0, 0.0],
        terminations=[False, False],
        truncations=[False, True],
    )
    data = d4rl.episodes_to_transitions(
        [first, second], d4rl.ANTMAZE_OBSERVATION_KEYS, True, 'hand-made'
    )
    # 2.0 and -3.0 were outside [-1, 1]; 1.0 only moves to LIMIT, which is not news.
    assert capsys.readouterr().err == (
        '[d4rl] hand-made: 2 of 5 action values were outside [-1, 1]; clipped them.\n'
    )

    assert set(data) == set(DATASET_KEYS)
    assert all(value.dtype == np.float32 for value in data.values())
    # Flattening order: achieved_goal, observation, desired_goal.
    np.testing.assert_array_equal(data['observations'][0], [-0.0, 0.0, 0.5, 100.0])
    np.testing.assert_array_equal(data['observations'][:, 1], [0, 1, 2, 10, 11])
    # next_observations stay inside their episode: episode 1 ends at step 3, not at step 10.
    np.testing.assert_array_equal(data['next_observations'][:, 1], [1, 2, 3, 11, 12])
    np.testing.assert_array_equal(data['rewards'], [-1, -1, 0, -1, -1])
    np.testing.assert_array_equal(data['terminals'], [0, 0, 1, 0, 1])
    # A termination stops bootstrapping, a truncation does not.
    np.testing.assert_array_equal(data['masks'], [1, 1, 0, 1, 1])
    np.testing.assert_allclose(data['actions'][:, 0], [LIMIT, -LIMIT, 0.5, 0.1, LIMIT])


def test_adroit_episodes_keep_rewards_and_array_observations():
    observations = np.arange(8, dtype=np.float64).reshape(4, 2)
    episode = _episode(observations, [[0.0]] * 3, [5.0, 6.0, 7.0], [False] * 3, [0, 0, 1])
    data = d4rl.episodes_to_transitions([episode], None, False, 'hand-made')
    np.testing.assert_array_equal(data['rewards'], [5, 6, 7])
    np.testing.assert_array_equal(data['observations'], observations[:-1])
    np.testing.assert_array_equal(data['next_observations'], observations[1:])
    np.testing.assert_array_equal(data['terminals'], [0, 0, 1])
    np.testing.assert_array_equal(data['masks'], [1, 1, 1])


def test_episode_with_wrong_observation_count_is_a_dataset_error():
    episode = _episode(np.zeros((3, 2)), [[0.0]] * 3, [0.0] * 3, [False] * 3, [False] * 3)
    with pytest.raises(DatasetError, match='one more observation'):
        d4rl.episodes_to_transitions([episode], None, False, 'hand-made')


def test_qlearning_dataset_processing_marks_discontinuities(capsys):
    # Two trajectories: 0 -> 1 -> 2 (timeout), then 7 -> 8 (terminal at the goal).
    raw = {
        'observations': np.array([[0.0], [1.0], [7.0], [8.0]]),
        'next_observations': np.array([[1.0], [2.0], [8.0], [9.0]]),
        'actions': np.array([[1.5], [0.0], [-2.0], [0.3]]),
        'rewards': np.array([0.0, 0.0, 0.0, 1.0]),
        'terminals': np.array([False, False, False, True]),
    }
    antmaze = d4rl.process_qlearning_dataset(raw, is_antmaze=True, source='antmaze-x')
    assert capsys.readouterr().err == (
        '[d4rl] antmaze-x: 2 of 4 action values were outside [-1, 1]; clipped them.\n'
    )
    assert set(antmaze) == set(DATASET_KEYS)
    assert all(value.dtype == np.float32 for value in antmaze.values())
    np.testing.assert_array_equal(antmaze['terminals'], [0, 1, 0, 1])
    np.testing.assert_array_equal(antmaze['masks'], [1, 1, 1, 0])
    np.testing.assert_array_equal(antmaze['rewards'], [-1, -1, -1, 0])
    np.testing.assert_allclose(antmaze['actions'][:, 0], [LIMIT, 0.0, -LIMIT, 0.3])
    adroit = d4rl.process_qlearning_dataset(raw, is_antmaze=False, source='adroit-x')
    np.testing.assert_array_equal(adroit['rewards'], raw['rewards'])


def test_normalized_score_uses_d4rl_references():
    low, high = d4rl.D4RL_REFERENCE_SCORES['pen']
    assert d4rl.normalized_score(low, high, high) == pytest.approx(100.0)
    assert d4rl.normalized_score(low, high, low) == pytest.approx(0.0)
    assert d4rl.normalized_score(0.0, 1.0, 1.0) == pytest.approx(100.0)


def test_legacy_gym_env_gets_the_gymnasium_api():
    class FakeLegacyEnv:
        observation_space = types.SimpleNamespace(low=-1.0, high=1.0, shape=(2,), dtype=np.float32)
        action_space = observation_space

        def seed(self, seed):
            self.seeded = seed

        def reset(self):
            return np.zeros(2, np.float32)

        def step(self, action):
            return np.ones(2, np.float32), 1.0, True, {'TimeLimit.truncated': True}

    env = d4rl.LegacyGymEnv(FakeLegacyEnv(), is_antmaze=True)
    observation, info = env.reset(seed=3)
    assert env.env.seeded == 3 and observation.shape == (2,) and info == {}
    _, reward, terminated, truncated, info = env.step(np.zeros(2))
    assert (reward, terminated, truncated, info['success']) == (1.0, False, True, 1.0)


# --- loading tiny Minari datasets of the real envs --------------------------------------------


@pytest.fixture(scope='module')
def minari_store(tmp_path_factory):
    pytest.importorskip('minari')
    pytest.importorskip('gymnasium_robotics')
    from minari_fixtures import make_tiny_minari_dataset

    root = tmp_path_factory.mktemp('minari')
    make_tiny_minari_dataset(root, ANTMAZE_ID, num_episodes=3, max_steps=12, ref_scores=(0, 1))
    make_tiny_minari_dataset(root, PEN_ID, num_episodes=2, max_steps=10, seed=5)
    return root


@pytest.fixture
def no_legacy_d4rl(monkeypatch):
    monkeypatch.setattr(d4rl, '_import_legacy_d4rl', lambda: None)


def _episodes(root, dataset_id):
    import minari

    return list(minari.MinariDataset(str(root / dataset_id / 'data')).iterate_episodes())


def test_load_antmaze_from_minari(minari_store, monkeypatch, no_legacy_d4rl):
    monkeypatch.setenv('MINARI_DATASETS_PATH', str(minari_store))
    bundle = d4rl.FAMILY.load('antmaze-umaze-v2', DataOptions(download=False))
    data = bundle.train_dataset

    assert bundle.env_name == 'antmaze-umaze-v2' and bundle.val_dataset is None
    assert bundle.online_reward_shift == -1.0
    assert bundle.provenance['source'] == 'minari'
    assert bundle.provenance['dataset_id'] == ANTMAZE_ID
    assert data['observations'].shape == (36, 2 + 27 + 2)
    assert data['actions'].shape == (36, 8)
    assert all(data[key].shape == (36,) for key in ('rewards', 'masks', 'terminals'))
    assert all(value.dtype == np.float32 for value in data.values())

    episodes = _episodes(minari_store, ANTMAZE_ID)
    obs = episodes[1].observations
    rows = slice(12, 24)
    np.testing.assert_allclose(data['observations'][rows, :2], obs['achieved_goal'][:-1], 1e-6)
    np.testing.assert_allclose(data['observations'][rows, 2:29], obs['observation'][:-1], 1e-6)
    np.testing.assert_allclose(data['observations'][rows, 29:], obs['desired_goal'][:-1], 1e-6)
    np.testing.assert_allclose(data['next_observations'][rows, 2:29], obs['observation'][1:], 1e-6)
    raw_rewards = np.concatenate([episode.rewards for episode in episodes])
    np.testing.assert_allclose(data['rewards'], raw_rewards - 1.0)
    np.testing.assert_array_equal(np.flatnonzero(data['terminals']), [11, 23, 35])
    np.testing.assert_array_equal(data['masks'], 1.0)  # Random episodes end by time limit only.
    assert np.abs(data['actions']).max() <= LIMIT

    assert bundle.normalize_score(1.0) == pytest.approx(100.0)
    assert bundle.provenance['score_reference']['from'] == 'minari metadata'

    make_env = pickle.loads(pickle.dumps(bundle.make_env))
    env = make_env()
    observation, _ = env.reset(seed=0)
    assert observation.shape == (31,) and observation.dtype == np.float32
    assert env.observation_space.shape == (31,)
    observation, _, _, _, info = env.step(env.action_space.sample())
    assert observation.shape == (31,) and info['success'] in (0.0, 1.0)
    env.close()


def test_antmaze_eval_episode_ends_at_success(minari_store, monkeypatch, no_legacy_d4rl):
    monkeypatch.setenv('MINARI_DATASETS_PATH', str(minari_store))
    env = d4rl.FAMILY.load('antmaze-umaze-v2', DataOptions(download=False)).make_env()
    env.reset(seed=0)
    maze_env = env.unwrapped
    maze_env.goal = maze_env.data.qpos[:2].copy()  # Put the goal under the ant.
    _, reward, terminated, _, info = env.step(np.zeros(8, np.float32))
    assert (reward, terminated, info['success']) == (1.0, True, 1.0)
    env.close()


def test_load_pen_from_minari_by_minari_id(minari_store, monkeypatch, no_legacy_d4rl):
    monkeypatch.setenv('MINARI_DATASETS_PATH', str(minari_store))
    canonical = d4rl.FAMILY.resolve(PEN_ID)
    bundle = d4rl.FAMILY.load(canonical, DataOptions(download=False))
    data = bundle.train_dataset

    assert data['observations'].shape == (20, 45) and data['actions'].shape == (20, 24)
    assert bundle.online_reward_shift == 0.0
    raw_rewards = np.concatenate([episode.rewards for episode in _episodes(minari_store, PEN_ID)])
    np.testing.assert_allclose(data['rewards'], raw_rewards, rtol=1e-6)
    np.testing.assert_array_equal(np.flatnonzero(data['terminals']), [9, 19])
    # No reference scores in this dataset's metadata: D4RL's pen constants apply.
    assert bundle.provenance['score_reference']['from'] == 'D4RL constants'
    assert bundle.normalize_score(d4rl.D4RL_REFERENCE_SCORES['pen'][1]) == pytest.approx(100.0)

    env = pickle.loads(pickle.dumps(bundle.make_env))()
    observation, _ = env.reset(seed=0)
    assert observation.shape == (45,)
    _, _, _, _, info = env.step(env.action_space.sample())
    assert info['success'] in (0.0, 1.0)
    env.close()


def test_explicit_dataset_path_points_at_a_minari_folder(minari_store, tmp_path, no_legacy_d4rl):
    options = DataOptions(dataset_path=str(minari_store / PEN_ID), download=False)
    bundle = d4rl.FAMILY.load('pen-human-v1', options)
    assert bundle.train_dataset['observations'].shape == (20, 45)
    with pytest.raises(DatasetError, match='not a Minari dataset folder'):
        d4rl.FAMILY.load('pen-human-v1', DataOptions(dataset_path=str(tmp_path)))


def test_missing_dataset_offline_names_the_download_command(tmp_path, monkeypatch, no_legacy_d4rl):
    monkeypatch.setenv('MINARI_DATASETS_PATH', str(tmp_path))

    def unreachable(dataset_id, timeout_s):
        raise OSError('the Minari server is unreachable')

    monkeypatch.setattr(d4rl, '_download_minari_dataset', unreachable)
    with pytest.raises(DatasetError) as error:
        d4rl.FAMILY.load('antmaze-large-play-v2', DataOptions())
    message = str(error.value)
    assert '`minari download D4RL/antmaze/large-play-v1`' in message
    assert str(tmp_path) in message and 'unreachable' in message
    assert '\n' not in message


def test_missing_dataset_is_downloaded_into_the_store(tmp_path, monkeypatch, no_legacy_d4rl):
    pytest.importorskip('minari')
    from minari_fixtures import make_tiny_minari_dataset

    monkeypatch.setenv('MINARI_DATASETS_PATH', str(tmp_path))
    requested = []

    def fake_download(dataset_id, timeout_s):
        requested.append(dataset_id)
        make_tiny_minari_dataset(tmp_path, dataset_id, 'AdroitHandPen-v1', 1, 5)

    monkeypatch.setattr(d4rl, '_download_minari_dataset', fake_download)
    bundle = d4rl.FAMILY.load('pen-expert-v1', DataOptions())
    assert requested == ['D4RL/pen/expert-v2']
    assert bundle.train_dataset['rewards'].shape == (5,)


def test_unreachable_server_fails_fast(tmp_path, monkeypatch, no_legacy_d4rl):
    monkeypatch.setenv('MINARI_DATASETS_PATH', str(tmp_path))
    monkeypatch.setenv('HF_ENDPOINT', 'http://127.0.0.1:9')  # Nothing listens on the discard port.
    with pytest.raises(DatasetError, match='minari download D4RL/door/human-v2'):
        d4rl.FAMILY.load('door-human-v1', DataOptions(download_timeout_s=2.0))
