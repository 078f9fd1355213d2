"""The two questions every environment family answers: how to make its envs, how to load its data.

A family turns a user-typed name into a canonical name (``resolve``) and a canonical name into an
``EnvBundle`` (``load``), reading the data flags (``DataOptions``, declared with every run flag in
``drol_jax.run_flags``). Everything downstream (training loop, evaluation, analysis) only sees
bundles, so no code outside ``drol_jax/envs`` needs to know which family a task belongs to.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import numpy as np

from drol_jax.errors import DatasetError
from drol_jax.run_flags import DataOptions

# Keys every dataset dict carries, in FQL's batch format.
DATASET_KEYS = ('observations', 'actions', 'rewards', 'masks', 'terminals', 'next_observations')
# Dataset actions are clipped strictly inside [-1, 1], as FQL does, so that a tanh policy's
# log-likelihood of them stays finite.
ACTION_CLIP = 1.0 - 1e-5


@dataclasses.dataclass
class EnvBundle:
    """Everything a run needs from an environment family.

    Attributes:
        env_name: canonical name (logged, used for run folders).
        make_env: picklable zero-argument factory of a gymnasium env for evaluation and online
            interaction (worker processes call it, so it must be a module-level function or a
            ``functools.partial`` of one).
        train_dataset: dict of numpy arrays with ``DATASET_KEYS`` (float32; ``terminals`` and
            ``masks`` as float32 0/1); for image tasks a ``drol_jax.frames.FrameDataset`` (uint8
            frames stored once, plus indices).
        val_dataset: same format, or None.
        provenance: where the data came from: ``{'source': 'published' | 'generated' |
            'unverified' | 'minari' | 'd4rl' | 'toy', 'path': ..., ...}``; generated data adds
            its recipe and seed.
        normalize_score: maps an episode return to a normalised score (D4RL x100), or None.
        online_reward_shift: added to env rewards during online fine-tuning so they match the
            dataset's convention (D4RL AntMaze: -1).
    """

    env_name: str
    make_env: Callable[[], Any]
    train_dataset: Any  # dict[str, np.ndarray] | FrameDataset
    val_dataset: Any
    provenance: dict[str, Any]
    normalize_score: Callable[[float], float] | None = None
    online_reward_shift: float = 0.0


class EnvFamily(Protocol):
    """One family of tasks (toy, OGBench, D4RL)."""

    name: str

    def resolve(self, env_name: str) -> str | None:
        """Return the canonical name if ``env_name`` belongs to this family, else None."""

    def known_names(self) -> list[str]:
        """Return the names shown in "did you mean" suggestions."""

    def task_family(self, canonical_name: str) -> str:
        """Return the key under which published per-task settings of a canonical name are filed."""

    def load(self, env_name: str, options: DataOptions) -> EnvBundle:
        """Make the envs and load the dataset of a canonical name; raise ``DatasetError``."""

    # Optional: ``check_options(options)`` raises ``ConfigError`` for a data option the family
    # cannot honour (the toy tasks and ``--dataset_path``), before anything is loaded.


def clip_actions(datasets: Iterable[dict[str, np.ndarray]], where: str) -> None:
    """Clip the ``actions`` of each dataset to +-``ACTION_CLIP`` in place.

    Prints one line (prefixed by ``where``) when values lay outside [-1, 1]: those are changed by
    the clip, while values moved from +-1 to +-``ACTION_CLIP`` only follow the convention.
    """
    datasets = list(datasets)
    outside = sum(int(np.count_nonzero(np.abs(d['actions']) > 1.0)) for d in datasets)
    if outside:
        total = sum(d['actions'].size for d in datasets)
        print(
            f'{where}: {outside} of {total} action values were outside [-1, 1]; clipped them.',
            file=sys.stderr,
            flush=True,
        )
    for dataset in datasets:
        dataset['actions'] = np.clip(dataset['actions'], -ACTION_CLIP, ACTION_CLIP)


def dataset_shapes(dataset) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(one observation's shape, one action's shape) of a dataset dict or ``FrameDataset``.

    A frame dataset's observation is one frame, as the environment (before frame stacking)
    shows it.
    """
    if isinstance(dataset, dict):
        return tuple(dataset['observations'].shape[1:]), tuple(dataset['actions'].shape[1:])
    return tuple(dataset.frames.shape[1:]), tuple(dataset.transitions['actions'].shape[1:])


def check_shapes(env: Any, dataset: dict[str, np.ndarray], where: str, env_name: str) -> None:
    """Raise ``DatasetError`` unless the dataset's observations and actions fit ``env``'s spaces."""
    expected = {'observation': env.observation_space.shape, 'action': env.action_space.shape}
    found = dict(zip(expected, dataset_shapes(dataset), strict=True))
    wrong = [
        f'{kind}s of shape {tuple(found[kind])} where the environment has {tuple(expected[kind])}'
        for kind in expected
        if tuple(found[kind]) != tuple(expected[kind])
    ]
    if wrong:
        raise DatasetError(
            f'The dataset {where} has {" and ".join(wrong)}: it is not data of {env_name} '
            '(check --dataset_path and --env_name).'
        )
