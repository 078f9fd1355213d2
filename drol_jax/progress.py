"""What a run shows while it trains: the progress bar, the measured speed and its lines in words.

The bar opens after compilation and shows no ETA until the speed is measured on whole blocks of
updates (``CALIBRATION_UPDATES`` at least); then it prints the expected training time once and
the bar shows tqdm's usual rate and ETA.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tqdm.auto import tqdm

# Updates timed (in whole blocks, compilation excluded) before the expected duration is stated.
CALIBRATION_UPDATES = 100
# tqdm's default layout without the ETA, which would only guess before the speed is measured.
_MEASURING_FORMAT = '{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, measuring speed{postfix}]'


class Progress:
    """The training bar, the speed announcement and the lines printed beside the bar."""

    def __init__(self, total_steps: int, offline_steps: int, enabled: bool):
        self.total_steps = total_steps
        self.offline_steps = offline_steps
        self.enabled = enabled
        self.bar = None
        self.announced = False

    def open(self, step: int) -> None:
        """Open the bar at ``step`` (after compilation, so its rate is the training's)."""
        self.bar = tqdm(
            total=self.total_steps,
            initial=step,
            desc='training',
            disable=not self.enabled,
            dynamic_ncols=True,
            bar_format=_MEASURING_FORMAT,
        )

    def advance(self, step: int, shown: Mapping[str, str] | None = None) -> None:
        """Move the bar to ``step``; ``shown`` replaces the metrics beside it."""
        if shown is not None:
            self.bar.set_postfix(shown, refresh=False)
        self.bar.update(step - self.bar.n)

    def write(self, line: str) -> None:
        """Print a line above the bar."""
        if self.bar is None:
            print(line, flush=True)
        else:
            self.bar.write(line)

    def timed(self, updates: int, seconds: float, step: int) -> None:
        """After ``updates`` timed in ``seconds``: state the expected duration, once, when enough.

        From then on the bar shows its ETA.
        """
        if self.announced or updates < CALIBRATION_UPDATES:
            return
        self.announced = True
        rate = updates / max(seconds, 1e-9)
        remaining = max(self.offline_steps - step, 0)
        self.write(
            f'Measured {rate:.1f} updates/s: {remaining:,} more offline updates take about '
            f'{duration(remaining / rate)} (evaluation not included).'
        )
        self.bar.bar_format = None  # tqdm's default layout, with the ETA.

    def close(self) -> None:
        """Close the bar, if it was opened."""
        if self.bar is not None:
            self.bar.close()


def describe_eval(row: Mapping[str, float]) -> str:
    """'success 0.42, return 12.3' from an evaluation row."""
    parts = []
    for key, name in (
        ('evaluation/success', 'success'),
        ('evaluation/episode.return', 'return'),
        ('evaluation/normalized_return', 'normalized return'),
    ):
        if key in row:
            parts.append(f'{name} {row[key]:.3g}')
    return ', '.join(parts)


def duration(seconds: float) -> str:
    """A duration as '13.0 h', '4.2 min' or '12 s'."""
    if seconds >= 3600:
        return f'{seconds / 3600:.1f} h'
    if seconds >= 60:
        return f'{seconds / 60:.1f} min'
    return f'{seconds:.0f} s'


def describe_dataset(provenance: Mapping[str, Any], num_transitions: int) -> str:
    """The training data in words, its label first: 'toy data, 10,000 transitions made ...'."""
    source = provenance.get('source', 'unknown')
    words = [f'{source} data, {num_transitions:,} transitions']
    if provenance.get('path'):
        words.append(f'from {provenance["path"]}')
    elif source == 'toy':
        words.append('made in memory')
    seed = provenance.get('seed', (provenance.get('generation') or {}).get('seed'))
    if seed is not None:
        words.append(f'with dataset seed {seed}')
    line = ' '.join(words)
    return f'{line} ({provenance["why"]}).' if provenance.get('why') else f'{line}.'


def closing_lines(
    summaries: list[dict], run_dirs: list[str], signal_name: str | None, wall: float
) -> list[str]:
    """The lines that end a run: the stop (if signalled), then one per seed with its scores."""
    lines = []
    step = summaries[0]['step']
    if signal_name is not None:
        lines.append(
            f'Received {signal_name} at step {step}: checkpoint saved, logs flushed. '
            'Continue with the same command plus --resume.'
        )
    outcome = 'Stopped' if signal_name else 'Done'
    for summary, run_dir in zip(summaries, run_dirs, strict=True):
        final, best = summary['final_eval'], summary['best_eval']
        scores = 'no evaluation'
        if final is not None:
            scores = (
                f'final {describe_eval(final)} at step {final["step"]}; '
                f'best {describe_eval(best)} at step {best["step"]}'
            )
        lines.append(
            f'{outcome}: seed {summary["seed"]}, {step:,} steps in {duration(wall)}; '
            f'{scores}. Run folder: {run_dir}'
        )
    return lines
