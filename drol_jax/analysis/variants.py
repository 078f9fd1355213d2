"""DROL and its variants side by side: mechanism metrics on the toy task and one OGBench task.

Every agent is an agent file, optionally with hyperparameters: ``PATH[:name=value,...]`` (for
example ``agents/drol.py:num_candidates=4``). By default: ``agents/drol.py``
and every ``agents/drol_*.py`` beside it. All agents get the same seeds, network sizes, batch
size, number of updates and data.

Toy (``toy-multimodal``: 3 action clusters per state, values 1, 0.45, 0.2). Each agent trains on
the task's dataset, all seeds in one vmapped run; every ``steps / curve_points`` updates the
training metrics winner entropy (``actor/best_idx_entropy``) and candidate spread
(``actor/candidate_pairwise_dist2``) are recorded. At the end the policy (the agent's own
``sample_actions``) draws ``eval_draws`` actions at each of ``eval_states`` held-out states:

- mode coverage: the share of (state, mode) pairs that at least one draw lands in;
- smallest mode's share: per state, the smallest share of draws in one mode (the data: 1/3);
- off-support share: draws in no mode (within ``MODE_RADIUS`` of no cluster centre);
- success: draws that earn at least half the best cluster's value (the toy env's success).

The same metrics of the task's own data generator are reported as the reference row.

OGBench (``cube-single`` by default, on one dataset file made by ``python -m
drol_jax.envs.datagen``): each agent trains through the library's run (``drol_jax.train.run``,
what main.py runs, with ``--preset=paper``: DROL's published settings) at the given reduced
scale; the final evaluation's success and return are read from the run summaries, and the last
logged Q, BC loss, validation mse, winner entropy and spread from ``train.csv`` (at a reduced
scale success may be 0 for every agent while these still differ). The runs are ordinary run
folders under ``<out_dir>/runs`` (``python -m drol_jax.plot`` reads them); an interrupted
benchmark resumes them, and finished runs are reused. The outputs are rewritten after the toy
benchmark and after each agent's OGBench runs, so an interrupted benchmark keeps its results.

Every number is a mean over seeds with a 95% percentile-bootstrap interval
(``drol_jax.plot.stats.bootstrap_mean_ci``). Writes ``variants.md`` (the table),
``variants.json`` (every number, per seed) and ``variants.png``.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import glob
import math
import os
import re
from typing import Any, NamedTuple

import numpy as np

from drol_jax import seeding, train
from drol_jax.agent_file import load_agent_file
from drol_jax.analysis import common
from drol_jax.envs.toy import DATASET_SEED, TASKS
from drol_jax.errors import ConfigError
from drol_jax.plot.stats import bootstrap_mean_ci
from drol_jax.run_flags import RunConfig
from drol_jax.run_folders import run_dir_for
from drol_jax.settings import resolve

HELD_OUT_SEED = DATASET_SEED + 3  # Neither the training (0), validation (1) nor k-scaling (2) set.
MODE_RADIUS = 0.15  # Three noise standard deviations of the toy clusters.
CURVES = {'winner entropy': 'actor/best_idx_entropy', 'spread': 'actor/candidate_pairwise_dist2'}
TOY_METRICS = ('coverage', 'smallest_share', 'off_support', 'success')
# The OGBench runs' last logged training (and held-out validation) metrics, beside success: at a
# reduced scale success may be 0 for every agent, and these still tell the agents apart.
OGBENCH_METRICS = {
    'Q': 'training/actor/q',
    'BC loss': 'training/actor/bc_loss',
    'validation mse': 'validation/actor/mse',
    'winner entropy': 'training/actor/best_idx_entropy',
    'spread': 'training/actor/candidate_pairwise_dist2',
}
# Commas inside brackets belong to a value (``score_hidden_dims=(64,64)``), not between two.
ASSIGNMENT_SPLIT = re.compile(r',(?=\s*[A-Za-z_]\w*\s*=)')
REPS = 10_000  # Bootstrap resamples.


class AgentSpec(NamedTuple):
    """An agent file and the hyperparameters it runs with here."""

    path: str
    overrides: dict[str, Any]

    @property
    def label(self) -> str:
        """The file's name plus the overrides, e.g. ``drol num_candidates=4``."""
        name = os.path.splitext(os.path.basename(self.path))[0]
        return ' '.join([name, *(f'{k}={v}' for k, v in self.overrides.items())])


def parse_agent(text: str) -> AgentSpec:
    """``PATH[:name=value,...]``; values are Python literals (tuples too), else strings."""
    path, _, assignments = text.partition(':')
    overrides = {}
    for item in filter(None, ASSIGNMENT_SPLIT.split(assignments)):
        name, equals, value = item.partition('=')
        name = name.strip()
        if not equals or not name.isidentifier():
            raise ConfigError(f'--agents: {item!r} in {text!r} is not name=value.')
        try:
            overrides[name] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            overrides[name] = value.strip()
    return AgentSpec(path, overrides)


def default_agents(folder: str = 'agents') -> tuple[str, ...]:
    """``<folder>/drol.py`` and every DROL variant file ``<folder>/drol_*.py``, sorted."""
    return (os.path.join(folder, 'drol.py'), *sorted(glob.glob(os.path.join(folder, 'drol_*.py'))))


@dataclasses.dataclass
class VariantsSettings:
    """Agents, seeds and the scale of both benchmarks."""

    agents: tuple[str, ...] = ()  # Empty: default_agents().
    seeds: int = 4
    seed: int = 0
    steps: int = 6000
    curve_points: int = 12
    hidden: tuple[int, ...] = (128, 128)
    batch_size: int = 256
    eval_states: int = 256
    eval_draws: int = 64
    ogbench_dataset: str | None = None  # None: no OGBench runs.
    ogbench_env: str = 'cube-single'
    ogbench_steps: int = 20_000
    ogbench_seeds: int = 3
    ogbench_hidden: tuple[int, ...] = (256, 256)
    ogbench_batch_size: int = 256
    ogbench_eval_episodes: int = 20


# ---------------------------------------------------------------------------------------------
# Pure computations.


def mode_metrics(task_name: str, states: np.ndarray, draws: np.ndarray) -> dict[str, float]:
    """Coverage, smallest share, off-support share and success of draws ``(S, M, d)``."""
    task = TASKS[task_name]
    centres = task.mode_centers(np.asarray(states, np.float32))  # (S, C, d)
    distances = np.linalg.norm(draws[:, :, None, :] - centres[:, None], axis=-1)  # (S, M, C)
    inside = distances.min(axis=-1) <= MODE_RADIUS
    nearest = distances.argmin(axis=-1)
    shares = np.stack(
        [np.mean(inside & (nearest == m), axis=1) for m in range(task.num_modes)], axis=-1
    )
    tiled = np.repeat(states, draws.shape[1], axis=0)
    rewards = task.reward(tiled, draws.reshape(-1, draws.shape[-1]))
    return {
        'coverage': float(np.mean(shares > 0)),
        'smallest_share': float(np.mean(shares.min(axis=-1))),
        'off_support': float(1.0 - np.mean(inside)),
        # ToyEnv's success: at least half the best cluster's value.
        'success': float(np.mean(rewards >= 0.5 * max(task.mode_values))),
    }


def data_draws(task_name: str, states: np.ndarray, num: int, seed: int) -> np.ndarray:
    """``num`` actions per state from the task's own generator (cluster + noise), ``(S, M, d)``."""
    task = TASKS[task_name]
    rng = np.random.default_rng(seed)
    centres = task.mode_centers(np.asarray(states, np.float32))
    modes = rng.integers(task.num_modes, size=(len(states), num))
    picked = np.take_along_axis(centres, modes[..., None], axis=1)
    return np.clip(picked + task.noise_std * rng.standard_normal(picked.shape), -1, 1)


def estimate(values, seed: int = 0) -> dict[str, Any]:
    """Mean over seeds (axis 0) with its 95% bootstrap interval, and the per-seed values."""
    values = np.asarray(values, np.float64)
    mean, low, high = bootstrap_mean_ci(values, reps=REPS, seed=seed)
    return {'mean': mean, 'low': low, 'high': high, 'per_seed': values}


def cell(stat: dict[str, Any] | None, scale: float = 1.0, digits: int = 2) -> str:
    """``mean [low, high]`` of a scalar estimate, scaled; '-' when missing."""
    if stat is None:
        return '-'
    values = (float(stat[k]) * scale for k in ('mean', 'low', 'high'))
    mean, low, high = values
    return f'{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]'


# ---------------------------------------------------------------------------------------------
# The toy benchmark.


def run_toy(spec: AgentSpec, settings: VariantsSettings) -> dict[str, Any]:
    """Train one agent on the toy task (all seeds together) and measure it."""
    loaded = common.load_agent(spec.path)
    config = loaded.config(
        **{
            'actor_hidden_dims': tuple(settings.hidden),
            'value_hidden_dims': tuple(settings.hidden),
            'batch_size': settings.batch_size,
            **spec.overrides,
        }
    )
    task, dataset = common.toy_task_data()
    seeds = [settings.seed + i for i in range(settings.seeds)]
    trainer = common.FusedTrainer(loaded.agent_class, config, dataset, seeds)
    ends = np.linspace(0, settings.steps, settings.curve_points + 1).round().astype(int)[1:]
    curves = {name: [] for name in CURVES}
    for start, end in zip([0, *ends[:-1]], ends, strict=True):
        info = trainer.train(int(end - start))
        for name, metric in CURVES.items():
            if metric not in info:
                raise ConfigError(
                    f'{spec.path} logs no {metric!r}: this benchmark needs DROL routing metrics.'
                )
            curves[name].append(np.asarray(info[metric], np.float64))
    held_out = task.make_dataset(settings.eval_states, HELD_OUT_SEED)['observations']
    key = seeding.analysis_eval_key(0)  # The same latents for every agent and seed.
    finals = []
    for index in range(len(seeds)):
        draws = common.policy_candidates(trainer.agent(index), held_out, settings.eval_draws, key)
        finals.append(mode_metrics(common.TASK_NAME, held_out, np.asarray(draws)))
    print(
        f'toy {spec.label}: '
        + ', '.join(f'{m} {np.mean([f[m] for f in finals]):.3f}' for m in TOY_METRICS),
        flush=True,
    )
    return {
        'steps': ends.tolist(),
        'curves': {name: estimate(np.stack(values, axis=1)) for name, values in curves.items()},
        'final': {m: estimate([f[m] for f in finals]) for m in TOY_METRICS},
    }


def toy_reference(settings: VariantsSettings) -> dict[str, float]:
    """The mode metrics of the task's own generator on the same held-out states."""
    task = TASKS[common.TASK_NAME]
    states = task.make_dataset(settings.eval_states, HELD_OUT_SEED)['observations']
    draws = data_draws(common.TASK_NAME, states, settings.eval_draws, HELD_OUT_SEED)
    return mode_metrics(common.TASK_NAME, states, draws)


# ---------------------------------------------------------------------------------------------
# The OGBench benchmark.


def ogbench_settings(spec: AgentSpec, settings: VariantsSettings, out_dir: str, resume: bool):
    """The run settings of one agent on the OGBench task (what main.py would resolve)."""
    steps = settings.ogbench_steps
    run = RunConfig(
        env_name=settings.ogbench_env,
        seed=settings.seed,
        num_seeds=settings.ogbench_seeds,
        save_dir=os.path.join(out_dir, 'runs'),
        run_group=re.sub(r'[^A-Za-z0-9_.]+', '_', spec.label.replace('=', '-')).strip('_'),
        offline_steps=steps,
        log_interval=max(steps // 10, 1),
        eval_interval=steps,
        save_interval=max(steps // 4, 1),
        eval_episodes=settings.ogbench_eval_episodes,
        dataset_path=settings.ogbench_dataset,
        download=False,
        progress=False,
        resume=resume,
    )
    explicit = {
        'actor_hidden_dims': tuple(settings.ogbench_hidden),
        'value_hidden_dims': tuple(settings.ogbench_hidden),
        'batch_size': settings.ogbench_batch_size,
        **spec.overrides,
    }
    return resolve(run, load_agent_file(spec.path), explicit)


def last_logged(run_dir: str, columns: dict[str, str]) -> dict[str, float]:
    """The last ``train.csv`` row's value of each column (by our name); NaN where not logged."""
    with open(os.path.join(run_dir, 'train.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    last = rows[-1] if rows else {}
    return {name: float(last.get(column) or math.nan) for name, column in columns.items()}


def run_ogbench(spec: AgentSpec, settings: VariantsSettings, out_dir: str) -> dict[str, Any]:
    """Train (or resume, or reuse) one agent's OGBench runs: final success and training metrics."""
    resolved = ogbench_settings(spec, settings, out_dir, resume=False)
    run = resolved.run
    folders = [
        run_dir_for(run.save_dir, run.run_group, resolved.env.name, resolved.agent_name, seed)
        for seed in resolved.seeds
    ]
    if any(os.path.exists(os.path.join(f, 'flags.json')) for f in folders):
        # An earlier benchmark started these runs: continue them (the run refuses changes).
        resolved = ogbench_settings(spec, settings, out_dir, resume=True)
    summaries = train.run(resolved)
    success = [s['final_eval']['evaluation/success'] for s in summaries]
    logged = [last_logged(folder, OGBENCH_METRICS) for folder in folders]
    print(
        f'ogbench {spec.label}: success {np.mean(success):.3f} per seed {success}; '
        + ', '.join(f'{m} {np.mean([row[m] for row in logged]):.4g}' for m in OGBENCH_METRICS),
        flush=True,
    )
    return {
        'success': estimate(success),
        'return': estimate([s['final_eval']['evaluation/episode.return'] for s in summaries]),
        'training': {m: estimate([row[m] for row in logged]) for m in OGBENCH_METRICS},
        'num_candidates': int(resolved.agent_config['num_candidates']),
        'run_dirs': folders,
        'dataset': summaries[0]['dataset'],
        'env_name': summaries[0]['env_name'],
        'wall_time_s': [s['wall_time_s'] for s in summaries],
    }


# ---------------------------------------------------------------------------------------------
# Both, and the output.


def run(settings: VariantsSettings, out_dir: str) -> dict[str, Any]:
    """Run the toy benchmark and, with a dataset, the OGBench one, for every agent.

    The results so far are written after the toy benchmark and after each agent's OGBench runs,
    so an interrupted benchmark keeps what it measured (and its finished runs are reused).
    """
    if settings.seeds < 1 or settings.ogbench_seeds < 1:
        raise ConfigError(f'--seeds and --ogbench_seeds must be >= 1, got {settings.seeds}.')
    if settings.curve_points < 1 or settings.steps < settings.curve_points:
        raise ConfigError(
            f'--curve_points must be in [1, --steps], got {settings.curve_points} with --steps '
            f'{settings.steps}.'
        )
    specs = [parse_agent(text) for text in (settings.agents or default_agents())]
    labels = [spec.label for spec in specs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f'--agents names an agent twice: {labels}.')
    result = {
        'settings': dataclasses.asdict(settings),
        'agents': labels,
        'toy_reference': toy_reference(settings),
        'toy': {},
        'ogbench': {},
    }
    for spec in specs:
        result['toy'][spec.label] = run_toy(spec, settings)
    if settings.ogbench_dataset:
        for spec in specs:
            write(result, out_dir)
            result['ogbench'][spec.label] = run_ogbench(spec, settings, out_dir)
    return result


def table_lines(result: dict[str, Any]) -> list[str]:
    """The results tables as Markdown lines: the toy's (with the data's row), then OGBench's."""
    header = [
        'agent',
        'toy coverage (%)',
        'toy smallest mode share (%)',
        'toy off-support (%)',
        'toy success (%)',
        'toy final winner entropy',
        'toy final spread',
    ]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    reference = result['toy_reference']
    data_row = ['toy data (generator)'] + [f'{100 * reference[m]:.2f}' for m in TOY_METRICS]
    lines.append('| ' + ' | '.join(data_row + ['-'] * (len(header) - len(data_row))) + ' |')
    for label in result['agents']:
        toy = result['toy'][label]
        row = [label, *(cell(toy['final'][m], 100.0, 1) for m in TOY_METRICS)]
        for name in CURVES:
            curve = toy['curves'][name]
            row.append(cell({k: np.asarray(curve[k])[-1] for k in ('mean', 'low', 'high')}))
        lines.append('| ' + ' | '.join(row) + ' |')
    if not result['ogbench']:
        return lines
    env = result['settings']['ogbench_env']
    header = [
        'agent',
        f'{env} success (%)',
        'final return',
        *(f'final {m}' for m in OGBENCH_METRICS),
    ]
    lines += ['', '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for label in result['agents']:
        runs = result['ogbench'].get(label)
        if runs is None:  # Not run yet (the benchmark writes as it goes).
            row = [label, *(['-'] * (len(header) - 1))]
        else:
            row = [label, cell(runs['success'], 100.0, 1), cell(runs['return'], digits=1)]
            row += [cell(runs['training'][m], digits=4) for m in OGBENCH_METRICS]
        lines.append('| ' + ' | '.join(row) + ' |')
    return lines


def scale_lines(result: dict[str, Any]) -> list[str]:
    """What was run, in words: seeds, updates, sizes, data."""
    s = result['settings']
    lines = [
        f'Toy: toy-multimodal, {s["seeds"]} seeds ({s["seed"]}..{s["seed"] + s["seeds"] - 1}), '
        f'{s["steps"]:,} updates, hidden {tuple(s["hidden"])}, batch {s["batch_size"]}; '
        f'{s["eval_draws"]} draws at each of {s["eval_states"]} held-out states.',
    ]
    if result['ogbench']:
        first = next(iter(result['ogbench'].values()))
        lines.append(
            f'OGBench: {first["env_name"]}, {s["ogbench_seeds"]} seeds, {s["ogbench_steps"]:,} '
            f'updates, hidden {tuple(s["ogbench_hidden"])}, batch {s["ogbench_batch_size"]}, '
            f'{s["ogbench_eval_episodes"]} evaluation episodes per seed, --preset=paper; data '
            f'{first["dataset"].get("source")}: {first["dataset"].get("path")}.'
        )
    elif s['ogbench_dataset']:
        lines.append(f'OGBench: {s["ogbench_env"]}, no agent finished yet.')
    else:
        lines.append('OGBench: not run (no --ogbench_dataset).')
    lines.append('Cells: mean over seeds [95% bootstrap interval].')
    return lines


def draw(result: dict[str, Any], path: str) -> None:
    """Curves of winner entropy and spread, final toy metrics and OGBench success."""
    plt = common.pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    labels = result['agents']
    for ax, name in zip(axes[0], CURVES, strict=True):
        for index, label in enumerate(labels):
            toy = result['toy'][label]
            curve = {k: np.asarray(v) for k, v in toy['curves'][name].items()}
            ax.plot(toy['steps'], curve['mean'], color=f'C{index}', label=label)
            ax.fill_between(toy['steps'], curve['low'], curve['high'], color=f'C{index}', alpha=0.2)
        ax.set_xlabel('updates')
        ax.set_title(f'toy: {name} ({CURVES[name]}) during training')
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    bars = axes[1][0]
    width = 0.8 / len(labels)
    positions = np.arange(len(TOY_METRICS))
    for index, label in enumerate(labels):
        final = result['toy'][label]['final']
        means = np.array([100 * float(final[m]['mean']) for m in TOY_METRICS])
        low = np.array([100 * float(final[m]['low']) for m in TOY_METRICS])
        high = np.array([100 * float(final[m]['high']) for m in TOY_METRICS])
        bars.bar(
            positions + index * width,
            means,
            width,
            yerr=[means - low, high - means],
            color=f'C{index}',
            label=label,
            capsize=2,
        )
    reference = result['toy_reference']
    for position, metric in zip(positions, TOY_METRICS, strict=True):
        bars.hlines(100 * reference[metric], position - width / 2, position + 0.8, colors='k', lw=1)
    bars.set_xticks(positions + 0.4 - width / 2, [m.replace('_', ' ') for m in TOY_METRICS])
    bars.set_ylabel('% (black line: the data generator)')
    bars.set_title('toy: final policy on held-out states')
    ogbench = axes[1][1]
    measured = [label for label in labels if label in result['ogbench']]
    if measured:
        # Success and the routing's winner entropy (as a share of its maximum, log K), both in
        # %: at a reduced scale success may be 0 everywhere while the routing still differs.
        groups = {
            'success': lambda runs: 100 * np.asarray(runs['success']['per_seed']),
            'winner entropy / log K': lambda runs: (
                100
                * np.asarray(runs['training']['winner entropy']['per_seed'])
                / np.log(max(runs['num_candidates'], 2))
            ),
        }
        width = 0.8 / len(labels)
        for index, label in enumerate(labels):
            if label not in result['ogbench']:
                continue
            per_seed = [group(result['ogbench'][label]) for group in groups.values()]
            ogbench.bar(
                np.arange(len(groups)) + index * width,
                [np.mean(v) for v in per_seed],
                width,
                color=f'C{index}',
                label=label,
            )
            for position, values in enumerate(per_seed):  # Every seed, as a dot.
                ogbench.plot(
                    np.full(len(values), position + index * width), values, 'k.', markersize=4
                )
        ogbench.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, list(groups))
        ogbench.set_ylabel('% (dots: seeds)')
        ogbench.set_title(f'{result["settings"]["ogbench_env"]}: end of training')
    else:
        ogbench.axis('off')
        ogbench.text(0.5, 0.5, 'OGBench: not run', ha='center')
    fig.suptitle('\n'.join(scale_lines(result)[:2]), fontsize=9)
    common.save_figure(fig, path, dpi=90, rect=(0, 0, 1, 0.95))


def write(result: dict[str, Any], out_dir: str) -> tuple[str, str]:
    """Write ``variants.png``, ``variants.json`` and ``variants.md``; returns the first two."""
    png, json_path = common.write_figure(result, out_dir, 'variants', draw)
    with open(os.path.join(out_dir, 'variants.md'), 'w') as f:
        f.write('\n'.join([*scale_lines(result), '', *table_lines(result)]) + '\n')
    return png, json_path
