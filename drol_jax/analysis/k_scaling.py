"""Candidate spread and routed BC loss against the number of candidates K.

For each K, DROL is trained on the toy multimodal task for a fixed budget (several seeds in one
vmapped run, ``q_coef`` 0 by default so the figure is about behaviour cloning and routing), then
measured on a fixed held-out batch of the task's states and actions:

- routed BC loss: ``mean_i min_k D_ik`` with the K candidates the agent was trained with,
  averaged over several latent draws (the quantity DROL minimises);
- candidate spread: mean pairwise per-dimension squared distance between a state's candidates,
  measured with the same large number of latents for every K so it is comparable across K
  (the pairwise mean is an unbiased estimate of the policy's spread for any number of samples,
  and it is defined for K = 1 too).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from drol_jax import seeding
from drol_jax.analysis import common
from drol_jax.envs.toy import DATASET_SEED, TASKS
from drol_jax.errors import ConfigError

HELD_OUT_SEED = DATASET_SEED + 2  # Neither the training (seed 0) nor the validation (1) set.
DEFAULT_KS = (1, 2, 4, 8, 16, 32, 64)


@dataclasses.dataclass
class KScalingSettings:
    """Which K, how long, how many seeds, and how the metrics are measured."""

    agent_path: str = 'agents/drol.py'
    ks: tuple[int, ...] = DEFAULT_KS
    steps: int = 1500
    seeds: int = 3
    seed: int = 0
    hidden: tuple[int, ...] = (128, 128)
    batch_size: int = 256
    q_coef: float = 0.0
    eval_states: int = 1024
    eval_draws: int = 8  # Latent draws averaged for the routed BC loss.
    spread_latents: int = 64  # Latents per state for the spread, the same for every K.


# ---------------------------------------------------------------------------------------------
# Pure computations.


def routed_bc(helpers: common.RoutingHelpers, candidates: Any, actions: Any) -> float:
    """Routed BC loss ``mean_i min_k D_ik`` of candidates (N, K, d) for actions (N, d)."""
    distances = helpers.candidate_distances(candidates, actions)
    winners = helpers.route_to_nearest(distances)
    return float(
        np.mean(np.take_along_axis(np.asarray(distances), np.asarray(winners)[:, None], 1))
    )


def seed_statistics(values: np.ndarray) -> dict[str, np.ndarray]:
    """Mean, standard deviation (ddof 1; 0 for one seed) and 95% CI half-width over seeds.

    ``values`` has seeds on axis 0. The CI uses Student's t quantile for the number of seeds.
    """
    from scipy import stats

    values = np.asarray(values, np.float64)
    num = values.shape[0]
    std = values.std(axis=0, ddof=1) if num > 1 else np.zeros(values.shape[1:])
    half_width = stats.t.ppf(0.975, num - 1) * std / np.sqrt(num) if num > 1 else std
    return {'mean': values.mean(axis=0), 'std': std, 'ci95': half_width}


def mean_regressor_bc(task_name: str, states: np.ndarray) -> float:
    """Routed BC loss of the best single-candidate policy (the clusters' mean), noise included.

    With one candidate the best action is the mean of the state's action distribution, whose
    loss is the per-dimension variance: spread of the cluster centres plus the noise.
    """
    task = TASKS[task_name]
    centres = task.mode_centers(np.asarray(states, np.float32))  # (N, C, d)
    between = np.mean((centres - centres.mean(axis=1, keepdims=True)) ** 2)
    return float(between + task.noise_std**2)


# ---------------------------------------------------------------------------------------------
# Training and measuring.


def run(settings: KScalingSettings) -> dict:
    """Train every K for ``steps`` updates on ``seeds`` seeds and measure both metrics."""
    if not settings.ks or min(settings.ks) < 1:
        raise ConfigError(f'--ks must list integers >= 1, got {list(settings.ks)}.')
    if settings.seeds < 1:
        raise ConfigError(f'--seeds must be >= 1, got {settings.seeds}.')
    loaded = common.load_agent(settings.agent_path)
    helpers = loaded.routing_helpers()
    task, dataset = common.toy_task_data()
    held_out = task.make_dataset(settings.eval_states, HELD_OUT_SEED)
    states, actions = held_out['observations'], held_out['actions']
    seeds = [settings.seed + i for i in range(settings.seeds)]

    # The same evaluation latents for every K and seed: one key for the spread, then one per
    # routed-BC draw.
    spread_key, *bc_keys = jax.random.split(seeding.analysis_eval_key(0), settings.eval_draws + 1)
    bc = np.zeros((len(seeds), len(settings.ks)))
    spread = np.zeros_like(bc)
    for column, k in enumerate(settings.ks):
        config = loaded.config(
            num_candidates=k,
            actor_hidden_dims=tuple(settings.hidden),
            value_hidden_dims=tuple(settings.hidden),
            batch_size=settings.batch_size,
            q_coef=settings.q_coef,
        )
        trainer = common.FusedTrainer(loaded.agent_class, config, dataset, seeds)
        trainer.train(settings.steps)
        for row in range(len(seeds)):
            agent = trainer.agent(row)
            draws = [common.policy_candidates(agent, states, k, key) for key in bc_keys]
            bc[row, column] = np.mean([routed_bc(helpers, c, actions) for c in draws])
            many = common.policy_candidates(agent, states, settings.spread_latents, spread_key)
            spread[row, column] = float(helpers.candidate_spread(many))
        print(
            f'K={k:>3}: routed BC {bc[:, column].mean():.4f}, spread {spread[:, column].mean():.4f}'
            f' (mean of {len(seeds)} seeds)',
            flush=True,
        )
    return {
        'settings': dataclasses.asdict(settings),
        'task': common.TASK_NAME,
        'ks': list(settings.ks),
        'seeds': seeds,
        'routed_bc': bc,
        'spread': spread,
        'routed_bc_stats': seed_statistics(bc),
        'spread_stats': seed_statistics(spread),
        'mean_regressor_bc': mean_regressor_bc(common.TASK_NAME, states),
        # K = 3 candidates exactly on the cluster centres leave only the noise variance.
        'noise_floor_bc': TASKS[common.TASK_NAME].noise_std ** 2,
        # Expected pairwise per-dimension squared distance of two dataset actions of a state.
        'data_spread': 2 * mean_regressor_bc(common.TASK_NAME, states),
    }


# ---------------------------------------------------------------------------------------------
# Output.


def draw(result: dict, path: str) -> None:
    """Two panels against K (log axis): routed BC loss and candidate spread, 95% CI bars."""
    plt = common.pyplot()
    ks = np.asarray(result['ks'])
    settings = result['settings']
    num_seeds = len(result['seeds'])
    fig, (ax_bc, ax_spread) = plt.subplots(1, 2, figsize=(11, 4.4))
    bc, spread = result['routed_bc_stats'], result['spread_stats']
    err_label = f'mean ± 95% CI over {num_seeds} seeds' if num_seeds > 1 else '1 seed'

    ax_bc.errorbar(
        ks, bc['mean'], yerr=bc['ci95'], marker='o', capsize=4, label=f'DROL ({err_label})'
    )
    ax_bc.axhline(
        result['mean_regressor_bc'],
        color='0.4',
        ls='--',
        label='single mean action (best K=1 can do)',
    )
    ax_bc.axhline(
        result['noise_floor_bc'], color='0.4', ls=':', label='one candidate on each cluster centre'
    )
    ax_bc.set_yscale('log')
    ax_bc.set_ylabel('routed BC loss  mean_i min_k |c_ik − a_i|² / d')
    ax_bc.set_title('Routed BC loss on held-out (state, action) pairs')

    ax_spread.errorbar(
        ks,
        spread['mean'],
        yerr=spread['ci95'],
        marker='o',
        capsize=4,
        color='C1',
        label=f'DROL ({err_label})',
    )
    ax_spread.axhline(
        result['data_spread'], color='0.4', ls='--', label="the state's dataset actions"
    )
    ax_spread.set_ylabel(
        f'candidate spread (per-dim sq. distance, {settings["spread_latents"]} latents)'
    )
    ax_spread.set_title('Spread of the policy’s actions at a state')
    ax_spread.set_ylim(bottom=0)

    common.k_axes((ax_bc, ax_spread), ks, 'K (candidates per state during training)', legend_size=8)
    fig.suptitle(
        f'DROL on {result["task"]} after {settings["steps"]:,} updates '
        f'(q_coef {settings["q_coef"]:g}, hidden {tuple(settings["hidden"])}, '
        f'batch {settings["batch_size"]})',
        fontsize=11,
    )
    common.save_figure(fig, path, dpi=90)


def write(result: dict, out_dir: str) -> tuple[str, str]:
    """Write ``k_scaling.png`` and ``k_scaling.json`` into ``out_dir``."""
    return common.write_figure(result, out_dir, 'k_scaling', draw)
