"""The two questions every environment family answers: how to make its envs, how to load its data.

A family turns a user-typed name into a canonical name (``resolve``) and a canonical name into an
``EnvBundle`` (``load``). Everything downstream (training loop, evaluation, analysis) only sees
bundles, so no code outside ``drol_jax/envs`` needs to know which family a task belongs to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

# Keys every dataset dict carries, in FQL's batch format.
DATASET_KEYS = ('observations', 'actions', 'rewards', 'masks', 'terminals', 'next_observations')


@dataclasses.dataclass
class DataOptions:
    """Where to look for (or put) a dataset; filled from main.py flags."""

    dataset_dir: str = '~/.ogbench/data'  # The OGBench download cache, reused if present.
    dataset_path: str | None = None  # An explicit file overrides every other source.
    generated_dir: str = '~/.drol_jax/generated'  # Locally regenerated data; never the cache.
    generate_episodes: int | None = None  # None: the published size.
    generate_seed: int = 0
    generate_workers: int | None = None  # None: every core.
    download: bool = True  # Try the dataset server before regenerating.
    download_timeout_s: float = 20.0


@dataclasses.dataclass
class EnvBundle:
    """Everything a run needs from an environment family.

    Attributes:
        env_name: canonical name (logged, used for run folders).
        make_env: picklable zero-argument factory of a gymnasium env for evaluation and online
            interaction (worker processes call it, so it must be a module-level function or a
            ``functools.partial`` of one).
        train_dataset: dict of numpy arrays with ``DATASET_KEYS`` (float32; ``terminals`` and
            ``masks`` as float32 0/1).
        val_dataset: same format, or None.
        provenance: where the data came from: ``{'source': 'published' | 'generated' | 'minari'
            | 'd4rl' | 'toy', 'path': ..., ...}``; generated data adds its recipe and seed.
        normalize_score: maps an episode return to a normalised score (D4RL x100), or None.
        online_reward_shift: added to env rewards during online fine-tuning so they match the
            dataset's convention (D4RL AntMaze: -1).
    """

    env_name: str
    make_env: Callable[[], Any]
    train_dataset: dict[str, np.ndarray]
    val_dataset: dict[str, np.ndarray] | None
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

    def load(self, env_name: str, options: DataOptions) -> EnvBundle:
        """Make the envs and load the dataset of a canonical name; raise ``DatasetError``."""
