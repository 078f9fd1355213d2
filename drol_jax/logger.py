"""Run logs: CSV files a plotting script can read, optional wandb, resumable without duplicates."""

from __future__ import annotations

import csv
import os
from typing import Any

from drol_jax.files import write_atomic


class CsvLogger:
    """Append rows with a fixed header (taken from the first row) and a ``step`` column.

    On resume, ``truncate_after(step)`` drops rows logged after the checkpoint so the continued
    run neither duplicates nor skips rows.
    """

    def __init__(self, path: str):
        self.path = path
        self.header: list[str] | None = None
        if os.path.exists(path):
            with open(path, newline='') as f:
                self.header = next(csv.reader(f), None)

    def log(self, row: dict[str, Any], step: int) -> None:
        """Write one row; keys missing from the header are ignored, absent ones left empty."""
        row = {'step': step, **row}
        new_file = self.header is None
        if new_file:
            self.header = list(row)
        with open(self.path, 'a', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=self.header, extrasaction='ignore')
            if new_file:
                writer.writeheader()
            writer.writerow({k: _plain(v) for k, v in row.items()})

    def truncate_after(self, step: int) -> None:
        """Remove rows with ``step`` greater than ``step`` (atomic rewrite)."""
        if not os.path.exists(self.path):
            return
        with open(self.path, newline='') as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        header, body = rows[0], rows[1:]
        step_col = header.index('step')
        kept = [r for r in body if int(float(r[step_col])) <= step]
        write_atomic(self.path, lambda f: csv.writer(f).writerows([header, *kept]), mode='w')


def _plain(value: Any) -> Any:
    """Python scalar for numpy/jax scalars so the CSV holds plain numbers."""
    return value.item() if hasattr(value, 'item') else value


class WandbLogger:
    """Forward metrics to Weights & Biases (only when ``--wandb_mode`` is online/offline)."""

    def __init__(self, mode: str, project: str, group: str, name: str, config: dict, run_dir: str):
        try:
            import wandb
        except ImportError as e:
            from drol_jax.errors import ConfigError

            raise ConfigError(f'--wandb_mode={mode} needs wandb: pip install wandb ({e}).') from e
        self.run = wandb.init(
            mode=mode,
            project=project,
            group=group,
            name=name,
            config=config,
            dir=run_dir,
            resume='allow',
            id=name.replace('/', '_'),
        )

    def log(self, row: dict[str, Any], step: int) -> None:
        """Send one row of metrics."""
        self.run.log({k: _plain(v) for k, v in row.items()}, step=step)

    def close(self) -> None:
        """Finish the wandb run."""
        self.run.finish()
