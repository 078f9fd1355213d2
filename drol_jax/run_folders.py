"""A run's folders: one per seed, with its logs, records, checkpoints and summary.

``save_dir/run_group/<env>/<agent>/seed<k>/`` holds ``flags.json`` (the settings the run started
with, never rewritten), ``resumes.json`` (one record per ``--resume``: its step, its changes and
the settings it ran with), ``train.csv``, ``eval.csv``, ``checkpoint_<step>.msgpack`` and
``summary.json``. This module owns everything about those files, so the training loop only says
what happened.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from typing import TYPE_CHECKING, Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from drol_jax import checkpoints
from drol_jax.cli import print_warning
from drol_jax.errors import ConfigError, UserError
from drol_jax.files import write_json_atomic
from drol_jax.logger import CsvLogger, WandbLogger

if TYPE_CHECKING:
    from drol_jax.settings import Settings

FLAGS_FILE = 'flags.json'
RESUMES_FILE = 'resumes.json'


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
        checkpoint is skipped with a warning (the previous one is used); a readable one that
        does not fit ``target`` (other network sizes, another agent) is an error.
        """
        for step in candidates:
            per_seed = []
            for i, folder in enumerate(self.folders):
                path = checkpoints.checkpoint_path(folder.run_dir, step)
                try:
                    per_seed.append(checkpoints.load(path, _seed_slice(target, i)))
                except UserError as e:
                    if _is_readable(path):
                        raise _does_not_fit(path, str(e).splitlines()[0]) from None
                    print_warning(f'{e} Falling back to the previous checkpoint.')
                    break
            else:
                restored = _restack(per_seed)
                mismatch = _shape_mismatch(restored, target)
                if mismatch is not None:
                    raise _does_not_fit(
                        checkpoints.checkpoint_path(self.folders[0].run_dir, step), mismatch
                    )
                return step, restored
        raise UserError(
            f'--resume: no readable checkpoint in {self.folders[0].run_dir} '
            f'(tried steps {candidates}).'
        )

    def check_resume(self, settings: Settings) -> dict[int, dict]:
        """Compare ``settings`` with each seed's record; the accepted changes, per seed.

        A changed hyperparameter, network size or fixed flag (``drol_jax.run_flags``) is one
        ``ConfigError`` naming each difference, unless ``--allow_changes``. Checked before any
        data is loaded, as is the presence of a checkpoint.
        """
        self.resume_candidates()
        changes = {}
        for folder in self.folders:
            recorded, where = self._latest_record(folder)
            if recorded is None:
                changes[folder.seed] = {}
                continue
            refused, accepted = settings.resume_differences(recorded, folder.seed)
            if refused and not settings.run.allow_changes:
                listed = ', '.join(
                    f'--{name} {_shown(old)} -> {_shown(new)}'
                    for name, (old, new) in refused.items()
                )
                raise ConfigError(
                    f'--resume: {len(refused)} setting(s) differ from the record in {where}: '
                    f'{listed}. Resume with the recorded values, or add --allow_changes to '
                    f'continue with these (the change is recorded in {RESUMES_FILE}).'
                )
            changes[folder.seed] = {**refused, **accepted}
        return changes

    @staticmethod
    def _latest_record(folder: SeedFolder) -> tuple[dict | None, str]:
        """The settings a seed last ran with: the last resume's, else ``flags.json``'s."""
        resumes = _read_json(os.path.join(folder.run_dir, RESUMES_FILE)) or []
        if resumes:
            return resumes[-1]['settings'], os.path.join(folder.run_dir, RESUMES_FILE)
        path = os.path.join(folder.run_dir, FLAGS_FILE)
        return _read_json(path), path

    def open_logs(
        self,
        start_step: int,
        record: dict,
        wandb: dict | None,
        resumed: dict[int, dict] | None = None,
    ) -> None:
        """Open the CSV logs (dropping rows after ``start_step``) and write the run's record.

        A new run writes ``record`` as ``flags.json``; a resumed one (``resumed``: its accepted
        changes per seed, from ``check_resume``) adds an entry to ``resumes.json`` instead.
        """
        for folder in self.folders:
            folder.train = CsvLogger(os.path.join(folder.run_dir, 'train.csv'))
            folder.eval = CsvLogger(os.path.join(folder.run_dir, 'eval.csv'))
            folder.train.truncate_after(start_step)
            folder.eval.truncate_after(start_step)
            seed_record = {**record, 'seed': folder.seed}
            if resumed is None:
                write_json_atomic(os.path.join(folder.run_dir, FLAGS_FILE), seed_record)
            else:
                self._add_resume(folder, start_step, resumed.get(folder.seed, {}), seed_record)
            if wandb is not None:
                name = os.path.relpath(folder.run_dir, self.save_dir)
                folder.wandb = WandbLogger(
                    config=seed_record, run_dir=folder.run_dir, name=name, **wandb
                )
            self._restore_eval_history(folder)

    @staticmethod
    def _add_resume(folder: SeedFolder, step: int, changes: dict, record: dict) -> None:
        """Append this resume (its step, its changes, its settings) to ``resumes.json``."""
        path = os.path.join(folder.run_dir, RESUMES_FILE)
        entry = {
            'resumed_at_step': step,
            'changes': {
                name: {'recorded': old, 'now': new} for name, (old, new) in changes.items()
            },
            'settings': record,
        }
        write_json_atomic(path, [*(_read_json(path) or []), entry])

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


def _is_readable(path: str) -> bool:
    """Whether a checkpoint file parses (it may still not fit the run's agent)."""
    try:
        with open(path, 'rb') as f:
            flax.serialization.msgpack_restore(f.read())
    except Exception:  # noqa: BLE001 - any parse failure means "unreadable".
        return False
    return True


def _shape_mismatch(restored: dict[str, Any], target: dict[str, Any]) -> str | None:
    """The first agent array whose shape differs between checkpoint and run, in words."""
    for key in SEED_STACKED:
        found = jax.tree_util.tree_leaves_with_path(restored[key])
        wanted = jax.tree_util.tree_leaves(target[key])
        for (path, got), want in zip(found, wanted, strict=True):
            if np.shape(got) != np.shape(want):
                name = jax.tree_util.keystr(path)
                return (
                    f'{key}{name} has shape {np.shape(got)[1:]} in the checkpoint and '
                    f'{np.shape(want)[1:]} in this run'
                )
    return None


def _does_not_fit(path: str, detail: str) -> UserError:
    return UserError(
        f'--resume: checkpoint {path} is readable but does not fit this run ({detail}); it was '
        'written with other network sizes or another agent file (compare the settings with '
        f'{FLAGS_FILE}).'
    )


def _read_json(path: str) -> Any:
    """The JSON in ``path``, or None when there is no such file."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f'cannot read the run record {path}: {e}') from e


def _shown(value: Any) -> str:
    """A recorded value, compactly: ``[512, 512]``, ``10.0``, ``"min"``."""
    return json.dumps(value)


def _restack(states: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate per-seed states along the seed axis (the inverse of ``_seed_slice``)."""
    stacked = {
        key: jax.tree_util.tree_map(
            lambda *xs: jnp.concatenate(xs), *[state[key] for state in states]
        )
        for key in SEED_STACKED
    }
    return {**states[0], **stacked}
