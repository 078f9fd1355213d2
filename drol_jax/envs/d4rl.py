"""D4RL tasks (AntMaze, Adroit): data from Minari, or from the legacy ``d4rl`` package if present.

Names. Every task has a D4RL name (``antmaze-large-play-v2``, ``pen-human-v1``), which is the
canonical name, and a Minari dataset id (``D4RL/antmaze/large-play-v1``, ``D4RL/pen/human-v2``);
both resolve to the same task (``TASKS`` below is the one table).

Routes. When ``import d4rl`` works (it needs mujoco-py and the MuJoCo 2.1 binaries), the data is
``d4rl.qlearning_dataset`` processed as in FQL (``process_qlearning_dataset``). Otherwise, the
normal case, the data is the Minari dataset of the same task, read from the local Minari store
(``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``), downloaded once if the store lacks it and
the Minari server answers. Minari episodes become transitions with ``episodes_to_transitions``,
which follows FQL's conventions for D4RL:

- AntMaze rewards are shifted by -1 (0 at the goal, -1 elsewhere);
- ``terminals`` is 1 on the last transition of every episode (trajectory boundaries);
- ``masks`` is ``1 - termination``: a time-limit truncation still bootstraps;
- dataset actions are clipped to +-(1 - 1e-5), strictly inside the policy's tanh/clip range.

AntMaze observations are dicts; they are flattened as ``ANTMAZE_OBSERVATION_KEYS``:
``achieved_goal`` (torso x, y), ``observation`` (27 numbers: the ant's positions without x, y,
then its velocities), ``desired_goal`` (goal x, y). The first 29 numbers are therefore exactly
D4RL's AntMaze observation (qpos, qvel); the goal comes last because Minari rewards are relative
to the goal recorded in each episode. The evaluation env flattens in the same order.

Evaluation env. The env Minari recovers from the dataset (its ``eval_env_spec``), wrapped so that
observations are flattened and ``info['success']`` is a float. AntMaze evaluation episodes end at
the first success, as D4RL's AntMaze evaluation envs do, so a return is 0 or 1.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from drol_jax.envs.base import DATASET_KEYS, DataOptions, EnvBundle, clip_actions
from drol_jax.errors import DatasetError

ANTMAZE_OBSERVATION_KEYS = ('achieved_goal', 'observation', 'desired_goal')
# Threshold under which two observations count as the same state when the d4rl route looks for
# trajectory boundaries (FQL's value).
CONTINUITY_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class D4RLTask:
    """One D4RL task and where its data lives."""

    d4rl_name: str  # Canonical name; also the legacy d4rl env id.
    minari_id: str
    domain: str  # 'antmaze', 'pen', 'door', 'hammer' or 'relocate'.

    @property
    def is_antmaze(self) -> bool:
        """AntMaze tasks shift rewards and flatten dict observations."""
        return self.domain == 'antmaze'

    @property
    def online_reward_shift(self) -> float:
        """Added to env rewards online: AntMaze datasets store reward - 1, so the env's must too."""
        return -1.0 if self.is_antmaze else 0.0

    @property
    def observation_keys(self) -> tuple[str, ...] | None:
        """Order in which dict observations are flattened; None for array observations."""
        return ANTMAZE_OBSERVATION_KEYS if self.is_antmaze else None


# The name table: D4RL name (canonical) -> Minari dataset id.
TASKS: tuple[D4RLTask, ...] = (
    D4RLTask('antmaze-umaze-v2', 'D4RL/antmaze/umaze-v1', 'antmaze'),
    D4RLTask('antmaze-umaze-diverse-v2', 'D4RL/antmaze/umaze-diverse-v1', 'antmaze'),
    D4RLTask('antmaze-medium-play-v2', 'D4RL/antmaze/medium-play-v1', 'antmaze'),
    D4RLTask('antmaze-medium-diverse-v2', 'D4RL/antmaze/medium-diverse-v1', 'antmaze'),
    D4RLTask('antmaze-large-play-v2', 'D4RL/antmaze/large-play-v1', 'antmaze'),
    D4RLTask('antmaze-large-diverse-v2', 'D4RL/antmaze/large-diverse-v1', 'antmaze'),
    D4RLTask('pen-human-v1', 'D4RL/pen/human-v2', 'pen'),
    D4RLTask('pen-cloned-v1', 'D4RL/pen/cloned-v2', 'pen'),
    D4RLTask('pen-expert-v1', 'D4RL/pen/expert-v2', 'pen'),
    D4RLTask('door-human-v1', 'D4RL/door/human-v2', 'door'),
    D4RLTask('door-cloned-v1', 'D4RL/door/cloned-v2', 'door'),
    D4RLTask('door-expert-v1', 'D4RL/door/expert-v2', 'door'),
    D4RLTask('hammer-human-v1', 'D4RL/hammer/human-v2', 'hammer'),
    D4RLTask('hammer-cloned-v1', 'D4RL/hammer/cloned-v2', 'hammer'),
    D4RLTask('hammer-expert-v1', 'D4RL/hammer/expert-v2', 'hammer'),
    D4RLTask('relocate-human-v1', 'D4RL/relocate/human-v2', 'relocate'),
    D4RLTask('relocate-cloned-v1', 'D4RL/relocate/cloned-v2', 'relocate'),
    D4RLTask('relocate-expert-v1', 'D4RL/relocate/expert-v2', 'relocate'),
)

# D4RL's reference returns (random policy, expert policy) per domain, from D4RL's ``infos.py``:
# normalised score = 100 * (return - random) / (expert - random). Used when a Minari dataset
# carries no ref_min_score/ref_max_score.
D4RL_REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    'antmaze': (0.0, 1.0),
    'pen': (96.262799, 3076.8331017826877),
    'door': (-56.512833, 2880.5693087298737),
    'hammer': (-274.856578, 12794.134825156867),
    'relocate': (-6.425911, 4233.877797728884),
}

_TASKS_BY_NAME = {name: task for task in TASKS for name in (task.d4rl_name, task.minari_id)}


def normalized_score(ref_min: float, ref_max: float, episode_return: float) -> float:
    """D4RL normalised score x100 of one episode return."""
    return 100.0 * (episode_return - ref_min) / (ref_max - ref_min)


def flatten_observations(observations: Any, keys: tuple[str, ...] | None) -> np.ndarray:
    """Concatenate dict observations along the last axis in ``keys`` order (arrays pass through).

    Works on a single observation and on a batch alike.
    """
    if keys is None:
        return np.asarray(observations)
    missing = [key for key in keys if key not in observations]
    if missing:
        raise DatasetError(
            f'Observation keys {sorted(observations)} lack {missing}; expected {list(keys)}.'
        )
    return np.concatenate([np.asarray(observations[key]) for key in keys], axis=-1)


def episodes_to_transitions(
    episodes: Iterable[Any], observation_keys: tuple[str, ...] | None, is_antmaze: bool, source: str
) -> dict[str, np.ndarray]:
    """Turn Minari episodes into one dict of transitions in FQL's format (float32).

    Each episode carries ``observations`` (T + 1 entries, an array or a dict of arrays),
    ``actions``, ``rewards``, ``terminations`` and ``truncations`` (T entries each), as Minari's
    ``EpisodeData``. Transition t of an episode goes from observation t to observation t + 1 of
    the same episode, so no transition crosses two episodes. ``source`` names the data in the
    line reporting actions outside [-1, 1].
    """
    parts: dict[str, list[np.ndarray]] = {key: [] for key in DATASET_KEYS}
    for episode in episodes:
        observations = flatten_observations(episode.observations, observation_keys)
        length = len(episode.rewards)
        if len(observations) != length + 1:
            raise DatasetError(
                f'An episode has {len(observations)} observations for {length} steps; a Minari '
                'episode stores one more observation than steps.'
            )
        terminals = np.zeros(length, np.float32)
        terminals[-1] = 1.0
        parts['observations'].append(observations[:-1])
        parts['next_observations'].append(observations[1:])
        parts['actions'].append(np.asarray(episode.actions))
        parts['rewards'].append(np.asarray(episode.rewards))
        parts['terminals'].append(terminals)
        parts['masks'].append(1.0 - np.asarray(episode.terminations, np.float32))
    if not parts['rewards']:
        raise DatasetError('The Minari dataset holds no episode.')
    dataset = {key: np.concatenate(values).astype(np.float32) for key, values in parts.items()}
    clip_actions([dataset], f'[d4rl] {source}')
    if is_antmaze:
        dataset['rewards'] -= 1.0
    return dataset


def process_qlearning_dataset(
    raw: Mapping[str, np.ndarray], is_antmaze: bool, source: str
) -> dict[str, np.ndarray]:
    """Apply FQL's D4RL processing to a ``d4rl.qlearning_dataset``-style dict (float32).

    ``raw`` holds observations, actions, next_observations, rewards and terminals as flat arrays
    of consecutive transitions. A trajectory ends where the next observation of a transition is
    not the observation of the following one (and at the last transition); masks come from the
    dataset's terminals, so timeouts still bootstrap. ``source`` names the data in the line
    reporting actions outside [-1, 1].
    """
    observations = np.asarray(raw['observations'], np.float32)
    next_observations = np.asarray(raw['next_observations'], np.float32)
    jumps = np.linalg.norm(observations[1:] - next_observations[:-1], axis=-1)
    terminals = np.append(jumps > CONTINUITY_TOLERANCE, True).astype(np.float32)
    rewards = np.asarray(raw['rewards'], np.float32).reshape(-1)
    dataset = {
        'observations': observations,
        'actions': np.asarray(raw['actions'], np.float32),
        'rewards': rewards - 1.0 if is_antmaze else rewards,
        'masks': 1.0 - np.asarray(raw['terminals'], np.float32).reshape(-1),
        'terminals': terminals,
        'next_observations': next_observations,
    }
    clip_actions([dataset], f'[d4rl] {source}')
    return dataset


def _success(info: Mapping[str, Any]) -> float:
    return float(bool(info.get('success', False)))


def _flat_observation_space(space: gym.Space, keys: tuple[str, ...] | None) -> gym.Space:
    if keys is None:
        return space
    low = np.concatenate([np.broadcast_to(space[k].low, space[k].shape) for k in keys])
    high = np.concatenate([np.broadcast_to(space[k].high, space[k].shape) for k in keys])
    return gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)


class D4RLEvalWrapper(gym.Wrapper):
    """Flattens observations, reports ``info['success']`` as a float, ends episodes at success."""

    def __init__(
        self, env: gym.Env, observation_keys: tuple[str, ...] | None, end_at_success: bool
    ):
        super().__init__(env)
        self.observation_keys = observation_keys
        self.end_at_success = end_at_success
        self.observation_space = _flat_observation_space(env.observation_space, observation_keys)

    def _flatten(self, observation):
        return flatten_observations(observation, self.observation_keys).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        """Reset the wrapped env and flatten its observation."""
        observation, info = self.env.reset(seed=seed, options=options)
        return self._flatten(observation), info

    def step(self, action):
        """Step the wrapped env; set ``info['success']``."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info)
        info['success'] = _success(info)
        if self.end_at_success and info['success']:
            terminated = True
        return self._flatten(observation), reward, terminated, truncated, info


def make_minari_eval_env(
    data_path: str, observation_keys: tuple[str, ...] | None, end_at_success: bool
) -> gym.Env:
    """Recover a Minari dataset's evaluation env and wrap it (worker processes call this)."""
    import minari

    env = minari.MinariDataset(data_path).recover_environment(eval_env=True)
    return D4RLEvalWrapper(env, observation_keys, end_at_success)


class LegacyGymEnv(gym.Env):
    """Gives a legacy ``gym`` env (4-tuple ``step``) the gymnasium API and ``info['success']``.

    D4RL's AntMaze evaluation envs end an episode at the goal with reward 1, so success there is a
    positive reward; its Adroit envs report ``goal_achieved``.
    """

    def __init__(self, env: Any, is_antmaze: bool):
        self.env = env
        self.is_antmaze = is_antmaze
        obs_space, act_space = env.observation_space, env.action_space
        self.observation_space = gym.spaces.Box(
            obs_space.low, obs_space.high, obs_space.shape, obs_space.dtype
        )
        self.action_space = gym.spaces.Box(
            act_space.low, act_space.high, act_space.shape, act_space.dtype
        )

    def reset(self, *, seed=None, options=None):
        """Reset; a seed goes through the legacy ``seed`` method."""
        if seed is not None:
            self.env.seed(seed)
        return self.env.reset(), {}

    def step(self, action):
        """Split legacy ``done`` into terminated and truncated (time limit)."""
        observation, reward, done, info = self.env.step(action)
        info = dict(info)
        truncated = bool(info.get('TimeLimit.truncated', False))
        success = reward > 0 if self.is_antmaze else info.get('goal_achieved', False)
        info['success'] = float(bool(success))
        return observation, reward, done and not truncated, truncated, info


def make_legacy_d4rl_env(d4rl_name: str, is_antmaze: bool) -> gym.Env:
    """Make a legacy d4rl evaluation env with the gymnasium API (worker processes call this)."""
    importlib.import_module('d4rl')  # Registers the D4RL envs with legacy gym.
    legacy_gym = importlib.import_module('gym')
    return LegacyGymEnv(legacy_gym.make(d4rl_name), is_antmaze)


def _import_legacy_d4rl():
    """Return the ``d4rl`` module, or None where it cannot be imported (the usual case)."""
    try:
        return importlib.import_module('d4rl')
    except Exception:  # d4rl fails in many ways without mujoco-py; all mean "absent".
        return None


def _minari_store() -> Path:
    return Path(os.environ.get('MINARI_DATASETS_PATH') or Path.home() / '.minari' / 'datasets')


def _remote_reachable(timeout_s: float) -> bool:
    remote = os.environ.get('MINARI_REMOTE', 'hf://farama-minari')
    if remote.startswith('gcp://'):
        url = 'https://storage.googleapis.com'
    else:
        url = os.environ.get('HF_ENDPOINT', 'https://huggingface.co')
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method='HEAD'), timeout=timeout_s):
            pass
    except urllib.error.HTTPError:
        return True  # The server answered, only not with 200.
    except (OSError, ValueError):
        return False
    return True


def _download_minari_dataset(dataset_id: str, timeout_s: float) -> None:
    """Download a Minari dataset into the local store; raise OSError when that is impossible.

    The server is probed first with a short timeout, because the Minari client retries an
    unreachable server for about half a minute before giving up.
    """
    if not _remote_reachable(timeout_s):
        raise OSError('the Minari server is unreachable')
    import minari

    try:
        minari.download_dataset(dataset_id)
    except ImportError as error:
        raise OSError('downloading needs huggingface_hub (pip install "minari[hf]")') from error
    except Exception as error:  # The client raises bare network and HTTP errors.
        raise OSError(str(error)) from error


def _minari_data_path(task: D4RLTask, options: DataOptions) -> Path:
    """Find (or fetch) the ``data`` folder of the task's Minari dataset."""
    if options.dataset_path:
        path = Path(options.dataset_path).expanduser()
        for candidate in (path / 'data', path):
            if (candidate / 'metadata.json').is_file():
                return candidate.resolve()
        raise DatasetError(
            f'--dataset_path {path} is not a Minari dataset folder (no metadata.json in it or in '
            'its data/ subfolder).'
        )
    data_path = (_minari_store() / task.minari_id / 'data').resolve()
    if (data_path / 'metadata.json').is_file():
        return data_path
    reason = 'downloading is disabled'
    if options.download:
        try:
            _download_minari_dataset(task.minari_id, options.download_timeout_s)
        except OSError as error:
            reason = f'the download failed ({error})'
        if (data_path / 'metadata.json').is_file():
            return data_path
    raise DatasetError(
        f'Minari dataset {task.minari_id} for {task.d4rl_name} is not in {_minari_store()} and '
        f'{reason}: on a connected machine run `minari download {task.minari_id}` (it writes to '
        '$MINARI_DATASETS_PATH, default ~/.minari/datasets) and copy '
        f'{task.minari_id} into {_minari_store()}.'
    )


def _load_minari(task: D4RLTask, options: DataOptions) -> EnvBundle:
    import minari

    data_path = _minari_data_path(task, options)
    try:
        dataset = minari.MinariDataset(str(data_path))
        transitions = episodes_to_transitions(
            dataset.iterate_episodes(), task.observation_keys, task.is_antmaze, str(data_path)
        )
    except DatasetError:
        raise
    except Exception as error:  # A damaged dataset fails in h5py, json or numpy.
        raise DatasetError(f'Cannot read the Minari dataset at {data_path}: {error}.') from error
    metadata = dataset.storage.metadata
    if metadata.get('ref_min_score') is not None and metadata.get('ref_max_score') is not None:
        reference = (float(metadata['ref_min_score']), float(metadata['ref_max_score']))
        reference_source = 'minari metadata'
    else:
        reference = D4RL_REFERENCE_SCORES[task.domain]
        reference_source = 'D4RL constants'
    return EnvBundle(
        env_name=task.d4rl_name,
        make_env=functools.partial(
            make_minari_eval_env, str(data_path), task.observation_keys, task.is_antmaze
        ),
        train_dataset=transitions,
        val_dataset=None,
        provenance={
            'source': 'minari',
            'path': str(data_path),
            'dataset_id': task.minari_id,
            'minari_version': metadata.get('minari_version'),
            'num_episodes': dataset.total_episodes,
            'num_transitions': len(transitions['rewards']),
            'observation_keys': list(task.observation_keys or ()),
            'score_reference': {'min': reference[0], 'max': reference[1], 'from': reference_source},
        },
        normalize_score=functools.partial(normalized_score, *reference),
        online_reward_shift=task.online_reward_shift,
    )


def _load_legacy_d4rl(task: D4RLTask, d4rl) -> EnvBundle:
    legacy_gym = importlib.import_module('gym')
    try:
        env = legacy_gym.make(task.d4rl_name)
        raw = d4rl.qlearning_dataset(env)
    except Exception as error:  # d4rl reports missing files and URLs loosely.
        raise DatasetError(f'd4rl could not load {task.d4rl_name}: {error}.') from error
    reference = D4RL_REFERENCE_SCORES[task.domain]
    return EnvBundle(
        env_name=task.d4rl_name,
        make_env=functools.partial(make_legacy_d4rl_env, task.d4rl_name, task.is_antmaze),
        train_dataset=process_qlearning_dataset(raw, task.is_antmaze, task.d4rl_name),
        val_dataset=None,
        provenance={
            'source': 'd4rl',
            'path': getattr(env, 'dataset_filepath', None),
            'dataset': task.d4rl_name,
            'score_reference': {'min': reference[0], 'max': reference[1], 'from': 'D4RL constants'},
        },
        normalize_score=functools.partial(normalized_score, *reference),
        online_reward_shift=task.online_reward_shift,
    )


class D4RLFamily:
    """Registry entry for the D4RL AntMaze and Adroit tasks."""

    name = 'd4rl'

    def resolve(self, env_name: str) -> str | None:
        """Map a D4RL name or a Minari id to the D4RL name (table lookup only)."""
        task = _TASKS_BY_NAME.get(env_name)
        return task.d4rl_name if task else None

    def known_names(self) -> list[str]:
        """D4RL names and Minari ids of every task."""
        return list(_TASKS_BY_NAME)

    def task_family(self, canonical_name: str) -> str:
        """The D4RL name without version: ``antmaze-large-play-v2`` -> ``antmaze-large-play``."""
        return canonical_name.rsplit('-v', 1)[0]

    def load(self, env_name: str, options: DataOptions) -> EnvBundle:
        """Load through legacy d4rl when it imports, else through Minari; raise ``DatasetError``.

        An explicit ``options.dataset_path`` (a Minari dataset folder) takes the Minari route.
        """
        task = _TASKS_BY_NAME[env_name]
        d4rl = None if options.dataset_path else _import_legacy_d4rl()
        if d4rl is not None:
            return _load_legacy_d4rl(task, d4rl)
        return _load_minari(task, options)


FAMILY = D4RLFamily()
