"""Learning-curve figures: one panel per (metric, environment), one line per run label."""

from __future__ import annotations

import math

from drol_jax.plot.runs import SUCCESS, metric_display, natural_key
from drol_jax.plot.stats import SeedCurves, bootstrap_mean_ci


def _format_steps(value: float, _position: int) -> str:
    """Tick label for gradient steps: 250k, 1M, 1.5M."""
    if abs(value) >= 1e6:
        return f'{value / 1e6:g}M'
    if abs(value) >= 1e3:
        return f'{value / 1e3:g}k'
    return f'{value:g}'


def draw_curves(
    curves_by_metric: dict[str, dict[tuple[str, str], SeedCurves]],
    reps: int = 10_000,
    seed: int = 0,
    title: str | None = None,
):
    """Draw one subplot per (metric, environment), one line per agent with its 95% CI band.

    Returns a matplotlib ``Figure`` (not attached to pyplot, so no display backend is needed).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    envs = sorted({env for curves in curves_by_metric.values() for env, _ in curves})
    agents = sorted(
        {label for curves in curves_by_metric.values() for _, label in curves}, key=natural_key
    )
    colors = {agent: f'C{i % 10}' for i, agent in enumerate(agents)}
    n_cols = min(len(envs), 4)
    rows_per_metric = math.ceil(len(envs) / n_cols)
    n_rows = rows_per_metric * len(curves_by_metric)

    # At least 7 inches wide so that the title and legend fit above a single subplot.
    fig = Figure(figsize=(max(4.4 * n_cols, 7.0), 3.4 * n_rows + 0.9), layout='constrained')
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    legend_handles = {}
    for m, (metric, curves) in enumerate(curves_by_metric.items()):
        label, _ = metric_display(metric)
        for e, env in enumerate(envs):
            ax = axes[m * rows_per_metric + e // n_cols, e % n_cols]
            ax.set_title(env, fontsize=11)
            ax.set_xlabel('gradient steps')
            ax.set_ylabel(label)
            ax.xaxis.set_major_formatter(FuncFormatter(_format_steps))
            ax.grid(alpha=0.3)
            if metric == SUCCESS:
                ax.set_ylim(-2, 102)
            plotted = False
            for agent in agents:
                group = curves.get((env, agent))
                if group is None:
                    continue
                mean, low, high = bootstrap_mean_ci(group.values, reps=reps, seed=seed)
                (line,) = ax.plot(group.steps, mean, color=colors[agent], lw=1.8)
                ax.fill_between(group.steps, low, high, color=colors[agent], alpha=0.2, lw=0)
                legend_handles[agent] = line
                plotted = True
            if not plotted:
                ax.set_xticks([])
                ax.set_yticks([])
                ax.text(
                    0.5,
                    0.5,
                    f'no {metric} logged',
                    ha='center',
                    va='center',
                    color='0.4',
                    transform=ax.transAxes,
                )
        for e in range(len(envs), rows_per_metric * n_cols):
            axes[m * rows_per_metric + e // n_cols, e % n_cols].set_visible(False)

    names = [_legend_label(a, curves_by_metric) for a in agents if a in legend_handles]
    # As many columns as fit the figure's width (a legend entry takes about 0.09 in per
    # character plus the line sample), so that long run labels wrap into rows.
    fitting = int(fig.get_figwidth() / (0.09 * (max(map(len, names)) + 6)))
    fig.legend(
        [legend_handles[a] for a in agents if a in legend_handles],
        names,
        loc='outside lower center',
        ncols=max(1, min(len(names), 5, fitting)),
        frameon=False,
    )
    fig.suptitle(
        title or 'Evaluation during training (mean over seeds, shaded: 95% bootstrap CI)',
        fontsize=12,
    )
    return fig


def _legend_label(agent: str, curves_by_metric: dict[str, dict[tuple[str, str], SeedCurves]]):
    """Agent name, its seed count(s), and a note when any of its curves was interpolated."""
    groups = [
        g for curves in curves_by_metric.values() for (_, a), g in curves.items() if a == agent
    ]
    counts = sorted({len(g.seeds) for g in groups})
    seeds = f'{counts[0]}' if len(counts) == 1 else f'{counts[0]}-{counts[-1]}'
    note = ', interpolated' if any(g.interpolated for g in groups) else ''
    return f'{agent} ({seeds} seed{"s" if counts[-1] > 1 else ""}{note})'
