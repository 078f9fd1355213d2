"""``python -m drol_jax.plot``: learning curves and the final-score table from run folders."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from drol_jax.cli import ArgumentParser, reports_user_errors
from drol_jax.errors import UserError
from drol_jax.plot.figures import draw_curves
from drol_jax.plot.runs import RETURN, SUCCESS, Run, load_runs
from drol_jax.plot.stats import group_curves
from drol_jax.plot.tables import write_table

log = logging.getLogger(__name__)


def _available_metrics(runs: Sequence[Run]) -> set[str]:
    """Metric columns with at least one value in some run."""
    return {
        name
        for run in runs
        for name, column in run.columns.items()
        if name != 'step' and not np.all(np.isnan(column))
    }


def choose_metrics(runs: Sequence[Run], requested: str | None) -> tuple[list[str], str]:
    """Return (metrics to draw, metric for the table).

    By default draw success and return (whichever were logged) and tabulate success, falling
    back to return when no run logged success (e.g. D4RL locomotion).
    """
    available = _available_metrics(runs)
    if requested is not None:
        if requested not in available:
            raise UserError(
                f'no run logged --metric {requested}; available: {", ".join(sorted(available))}'
            )
        return [requested], requested
    drawn = [m for m in (SUCCESS, RETURN) if m in available]
    if not drawn:
        raise UserError(
            f'runs log neither {SUCCESS} nor {RETURN}; pick one of --metric '
            f'{", ".join(sorted(available))}'
        )
    return drawn, drawn[0]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse command-line flags."""
    parser = ArgumentParser(
        prog='python -m drol_jax.plot',
        description='Plot learning curves (mean over seeds, 95% bootstrap CI) and tabulate '
        "final scores from eval.csv logs (ours or FQL's).",
    )
    parser.add_argument(
        '--runs',
        nargs='+',
        required=True,
        metavar='GLOB',
        help='glob(s) matching run folders, eval.csv files, or folders above them; quote them '
        "(e.g. 'exp/**/seed*'); ** is recursive",
    )
    parser.add_argument(
        '--out', default='curves.png', help='figure path, format from suffix (default curves.png)'
    )
    parser.add_argument(
        '--metric',
        help=f'eval.csv column to plot and tabulate (default: draw {SUCCESS} and {RETURN}, '
        f'tabulate {SUCCESS}, or {RETURN} when no run logged success)',
    )
    parser.add_argument(
        '--table',
        action='store_true',
        help='print the final-score table (rows: task families, or tasks with --by task; '
        'columns: run labels; IQM and mean per benchmark) and write <out stem>_table.csv, '
        '.md and .tex',
    )
    parser.add_argument(
        '--by',
        choices=('family', 'task'),
        default='family',
        help='table rows: task families (an OGBench family pools its 5 tasks; default) or tasks',
    )
    parser.add_argument(
        '--final-window',
        type=int,
        default=1,
        metavar='N',
        help='final score = mean of the last N aligned evaluations (default 1)',
    )
    parser.add_argument(
        '--reps', type=int, default=10_000, metavar='N', help='bootstrap resamples (default 10000)'
    )
    parser.add_argument(
        '--seed', type=int, default=0, help='random seed of the bootstraps (default 0)'
    )
    parser.add_argument('--title', help='figure title')
    args = parser.parse_args(argv)
    if args.final_window < 1 or args.reps < 1:
        parser.error('--final-window and --reps must be positive')
    return args


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Run the plotting command; return the process exit status."""
    args = parse_args(argv)
    # Our progress messages at INFO; other libraries' (rliable logs each agent) only at WARNING.
    logging.basicConfig(format='%(levelname)s: %(message)s', level=logging.WARNING)
    logging.getLogger('drol_jax.plot').setLevel(logging.INFO)
    runs = load_runs(args.runs)
    drawn, table_metric = choose_metrics(runs, args.metric)
    curves_by_metric = {metric: group_curves(runs, metric) for metric in drawn}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure = draw_curves(curves_by_metric, reps=args.reps, seed=args.seed, title=args.title)
    figure.savefig(out, dpi=150)
    n_groups = len({key for curves in curves_by_metric.values() for key in curves})
    log.info('wrote %s (%d runs, %d env/label groups)', out, len(runs), n_groups)
    if args.table:
        table_curves = curves_by_metric[table_metric]
        skipped = sorted({r.env_name for r in runs} - {env for env, _ in table_curves})
        if skipped:
            log.warning(
                'table leaves out %s: no %s logged (choose another with --metric)',
                ', '.join(skipped),
                table_metric,
            )
        print(
            write_table(
                table_curves,
                table_metric,
                out,
                args.final_window,
                args.reps,
                args.seed,
                args.by,
            )
        )
    return 0
