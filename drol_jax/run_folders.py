"""A run's folders: one per seed, with its logs, flags, checkpoints and summary.

``save_dir/run_group/<env>/<agent>/seed<k>/`` holds ``flags.json``, ``train.csv``,
``eval.csv``, ``checkpoint_<step>.msgpack`` and ``summary.json``. This module owns everything
about those files, so the training loop only says what happened.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import warnings
from typing import Any

import jax
import jax.numpy as jnp

from drol_jax import checkpoints
from drol_jax.errors import ConfigError, UserError
from drol_jax.files import write_json_atomic
from drol_jax.logger import CsvLogger, WandbLogger


def run_dir_for(save_dir: str, run_group: str, env_name: str, agent_name: str, seed: int) -> str:
    """Deterministic run folder: ``save_dir/run_group/env/agent/seed<k>``."""
    return os.path.join(save_dir, run_group, env_name, agent_name, f'seed{seed}')


def check_writable(folder: str, flag: str) -> None:
    """Create ``folder`` if needed and prove it is writable, or raise a one-line ``ConfigError``."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f'.write_probe_{os.getpid()}')
        with open(probe, 'w'):
            pass
        os.remove(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConfigError(f'{flag} {folder!r} is not a writable folder: {reason}.') from e


def score(row: dict) -> tuple[float, float]:
    """Ranking key for 'best evaluation': success, then return."""
    return row.get('evaluation/success', -math.inf), row.get('evaluation/episode.return', -math.inf)


@dataclasses.dataclass
class SeedFolder:
    """One seed's folder, its open logs and its evaluation history."""

    seed: int
    run_dir: str
    train: CsvLogger | None = None
    eval: CsvLogger | None = None
    wandb: WandbLogger | None = None
    last_eval: dict | None = None
    best_eval: dict | None = None

    def record_eval(self, row: dict, step: int) -> None:
        """Log an evaluation row and keep the last and best results."""
        self.eval.log(row, step)
        if self.wandb:
            self.wandb.log(row, step)
        self.last_eval = {'step': step, **row}
        if self.best_eval is None or score(row) > score(self.best_eval):
            self.best_eval = self.last_eval

    def record_train(self, row: dict, step: int) -> None:
        """Log a training row."""
        self.train.log(row, step)
        if self.wandb:
            self.wandb.log(row, step)


class RunFolders:
    """The folders of every seed of one run."""

    def __init__(self, save_dir: str, run_group: str, env_name: str, agent_name: str, seeds):
        self.save_dir = save_dir
        self.seeds = list(seeds)
        self.folders = [
            SeedFolder(s, run_dir_for(save_dir, run_group, env_name, agent_name, s))
            for s in self.seeds
        ]

    def check_writable(self) -> None:
        """Fail at once (before any data is loaded) if the folders cannot be written."""
        if os.path.exists(self.save_dir) and not os.path.isdir(self.save_dir):
            raise ConfigError(f'--save_dir {self.save_dir!r} is a file, not a folder.')
        for folder in self.folders:
            check_writable(folder.run_dir, '--save_dir')

    def resume_candidates(self) -> list[int]:
        """Checkpoint steps every seed has, newest first; an error if there is none."""
        steps = [set(checkpoints.saved_steps(f.run_dir)) for f in self.folders]
        common = sorted(set.intersection(*steps), reverse=True)
        if not common:
            raise UserError(f'--resume: no checkpoint in {self.folders[0].run_dir} to resume from.')
        return common

    def refuse_overwrite(self) -> None:
        """A new run never writes into a folder that already holds a run."""
        for folder in self.folders:
            existing = [
                f
                for f in ('train.csv', 'eval.csv')
                if os.path.exists(os.path.join(folder.run_dir, f))
            ]
            if checkpoints.saved_steps(folder.run_dir):
                existing.append('checkpoints')
            if existing:
                raise UserError(
                    f'run folder {folder.run_dir} already holds a run; pass --resume to continue '
                    'it, or choose another --run_group, --seed or --save_dir.'
                )

    def load_latest(self, candidates: list[int], target: dict) -> tuple[int, dict]:
        """The newest checkpoint that every seed can load, restacked; see ``save``.

        ``target`` has the structure of the saved state with all seeds stacked. An unreadable
        checkpoint is skipped with a warning (the previous one is used).
        """
        for step in candidates:
            try:
                per_seed = [
                    checkpoints.load(
                        checkpoints.checkpoint_path(folder.run_dir, step), _seed_slice(target, i)
                    )
                    for i, folder in enumerate(self.folders)
                ]
                return step, _restack(per_seed)
            except UserError as e:
                warnings.warn(f'{e} Falling back to the previous checkpoint.', stacklevel=2)
        raise UserError(
            f'--resume: no readable checkpoint in {self.folders[0].run_dir} '
            f'(tried steps {candidates}).'
        )

    def open_logs(self, start_step: int, flags: dict, wandb: dict | None) -> None:
        """Open the CSV logs (dropping rows after ``start_step``), write ``flags.json``."""
        for folder in self.folders:
            folder.train = CsvLogger(os.path.join(folder.run_dir, 'train.csv'))
            folder.eval = CsvLogger(os.path.join(folder.run_dir, 'eval.csv'))
            folder.train.truncate_after(start_step)
            folder.eval.truncate_after(start_step)
            seed_flags = {**flags, 'seed': folder.seed}
            write_json_atomic(os.path.join(folder.run_dir, 'flags.json'), seed_flags)
            if wandb is not None:
                name = os.path.relpath(folder.run_dir, self.save_dir)
                folder.wandb = WandbLogger(
                    config=seed_flags, run_dir=folder.run_dir, name=name, **wandb
                )
            self._restore_eval_history(folder)

    @staticmethod
    def _restore_eval_history(folder: SeedFolder) -> None:
        """On resume, rebuild best/last evaluation from the kept ``eval.csv`` rows."""
        if not os.path.exists(folder.eval.path):
            return
        with open(folder.eval.path, newline='') as f:
            for row in csv.DictReader(f):
                values = {k: float(v) for k, v in row.items() if k != 'step' and v != ''}
                step = int(float(row['step']))
                folder.last_eval = {'step': step, **values}
                if folder.best_eval is None or score(values) > score(folder.best_eval):
                    folder.best_eval = folder.last_eval

    def save(self, step: int, state: dict[str, Any]) -> None:
        """Checkpoint every seed's folder with that seed's part of the seed-stacked ``state``.

        Each file keeps a leading seed axis of size 1, so a file reads the same whether the run
        trained one seed or many, and a folder holds only its own seed (not N copies of all).
        """
        for i, folder in enumerate(self.folders):
            checkpoints.save(folder.run_dir, step, _seed_slice(state, i))

    def write_summaries(self, common: dict[str, Any]) -> list[dict]:
        """``summary.json`` per seed: ``common`` plus the seed's final and best evaluation."""
        summaries = []
        for folder in self.folders:
            summary = {
                **common,
                'seed': folder.seed,
                'final_eval': folder.last_eval,
                'best_eval': folder.best_eval,
            }
            write_json_atomic(os.path.join(folder.run_dir, 'summary.json'), summary)
            summaries.append(summary)
        return summaries

    def close(self) -> None:
        """Finish the wandb runs, if any."""
        for folder in self.folders:
            if folder.wandb:
                folder.wandb.close()


# Entries of a checkpoint state whose arrays carry the seed axis first.
SEED_STACKED = ('agents', 'sampler_keys')


def _seed_slice(state: dict[str, Any], index: int) -> dict[str, Any]:
    """Seed ``index`` of a seed-stacked state, keeping a leading axis of size 1."""
    sliced = {
        key: jax.tree_util.tree_map(lambda x: x[index : index + 1], state[key])
        for key in SEED_STACKED
    }
    return {**state, **sliced}


def _restack(states: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate per-seed states along the seed axis (the inverse of ``_seed_slice``)."""
    stacked = {
        key: jax.tree_util.tree_map(
            lambda *xs: jnp.concatenate(xs), *[state[key] for state in states]
        )
        for key in SEED_STACKED
    }
    return {**states[0], **stacked}
