"""Nearest-candidate regions of one state through training, and the handoffs between them.

On the toy multimodal task (2-D actions, 3 action clusters per state) DROL is trained while, at
snapshots, the K candidates of ONE fixed state are drawn with fixed latents. Routing a grid of
the action square [-1, 1]^2 with DROL's own routing helpers gives each candidate's
nearest-candidate region (its Voronoi cell). Routing a fixed set of dataset actions of that state
tells which candidate owns each action; a *handoff* is an action whose owner changes between
consecutive snapshots.

The computations (``grid_owners``, ``action_owners``, ``count_handoffs``, ``cluster_owners``,
``cluster_owner_changes``) are pure functions; ``run`` trains and ``draw`` plots.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from drol_jax import seeding
from drol_jax.analysis import common
from drol_jax.envs.toy import TASKS
from drol_jax.errors import ConfigError

STATE_ACTIONS_SEED = 1  # Noise of the fixed dataset actions drawn at the chosen state.


# ---------------------------------------------------------------------------------------------
# Pure computations.


def action_grid(grid_size: int) -> np.ndarray:
    """Cell centres of a ``grid_size`` x ``grid_size`` grid over [-1, 1]^2, shape (G*G, 2).

    Row-major with the second action coordinate as the row, so ``reshape(G, G)`` of per-point
    values is an image with ``origin='lower'``.
    """
    edges = np.linspace(-1.0, 1.0, grid_size + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    first, second = np.meshgrid(centres, centres)
    return np.stack([first.ravel(), second.ravel()], axis=-1).astype(np.float32)


def action_owners(helpers: common.RoutingHelpers, candidates: Any, actions: Any) -> np.ndarray:
    """Index of the nearest of one state's candidates (K, d) for each action (M, d), shape (M,).

    Uses DROL's own distance and routing, so the regions are exactly those training routes to.
    """
    candidates = jnp.asarray(candidates, jnp.float32)
    actions = jnp.asarray(actions, jnp.float32)
    tiled = jnp.broadcast_to(candidates[None], (actions.shape[0], *candidates.shape))
    return np.asarray(helpers.route_to_nearest(helpers.candidate_distances(tiled, actions)))


def grid_owners(helpers: common.RoutingHelpers, candidates: Any, grid_size: int) -> np.ndarray:
    """Nearest-candidate region (Voronoi cell) of each grid point, shape (G, G), row = dim 2."""
    return action_owners(helpers, candidates, action_grid(grid_size)).reshape(grid_size, grid_size)


def count_handoffs(owners: np.ndarray) -> np.ndarray:
    """Handoffs between consecutive snapshots: owners (S, M) -> counts (S-1,).

    A handoff is a (fixed) dataset action whose winning candidate differs from the previous
    snapshot.
    """
    owners = np.asarray(owners)
    return np.sum(owners[1:] != owners[:-1], axis=1)


def cluster_owners(owners: np.ndarray, cluster_ids: np.ndarray, num_candidates: int) -> np.ndarray:
    """Majority owner of each action cluster at each snapshot, shape (S, C).

    Ties go to the lowest candidate index (``argmax``).
    """
    owners = np.asarray(owners)
    num_clusters = int(np.max(cluster_ids)) + 1
    result = np.zeros((owners.shape[0], num_clusters), np.int64)
    for cluster in range(num_clusters):
        members = owners[:, cluster_ids == cluster]
        counts = np.stack([np.sum(members == k, axis=1) for k in range(num_candidates)], axis=1)
        result[:, cluster] = np.argmax(counts, axis=1)
    return result


def cluster_owner_changes(majority_owners: np.ndarray) -> np.ndarray:
    """Whether each cluster's majority owner changed since the previous snapshot, (S-1, C)."""
    majority_owners = np.asarray(majority_owners)
    return majority_owners[1:] != majority_owners[:-1]


def state_actions(
    task_name: str, state: np.ndarray, per_cluster: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Dataset actions of one state from the task's generator, and their cluster index.

    Same recipe as ``ToyTask.make_dataset`` (cluster centre plus Gaussian noise, clipped), with
    ``per_cluster`` actions drawn for every cluster so each cluster is equally visible.
    """
    task = TASKS[task_name]
    rng = np.random.default_rng(seed)
    centres = task.mode_centers(np.asarray(state, np.float32)[None])[0]
    cluster_ids = np.repeat(np.arange(task.num_modes), per_cluster)
    noise = task.noise_std * rng.standard_normal((len(cluster_ids), task.action_dim))
    actions = np.clip(centres[cluster_ids] + noise, -1, 1).astype(np.float32)
    return actions, cluster_ids


# ---------------------------------------------------------------------------------------------
# Training with snapshots.


@dataclasses.dataclass
class VoronoiSettings:
    """What to train and when to look."""

    agent_path: str = 'agents/drol.py'
    num_candidates: int = 4
    steps: int = 3000
    snapshots: int = 6  # Including the one before the first update.
    warmup_steps: int = 0  # BC-only (q_coef=0) updates before the first snapshot.
    seed: int = 0
    hidden: tuple[int, ...] = (128, 128)
    batch_size: int = 256
    bc_coef: float | None = None  # None: the agent file's default.
    q_coef: float | None = None
    state: tuple[float, float] = (0.0, 0.0)
    actions_per_cluster: int = 100
    grid_size: int = 200


def snapshot_steps(steps: int, snapshots: int) -> list[int]:
    """Evenly spaced update counts from 0 to ``steps`` (``snapshots`` of them, distinct)."""
    if snapshots < 2 or steps < snapshots - 1:
        raise ConfigError(
            f'--snapshots must be >= 2 and at most --steps + 1, got {snapshots} with '
            f'--steps {steps}.'
        )
    return [int(round(x)) for x in np.linspace(0, steps, snapshots)]


def run(settings: VoronoiSettings) -> dict:
    """Train DROL on the toy task and record candidates, cells and owners at each snapshot."""
    loaded = common.load_agent(settings.agent_path)
    helpers = loaded.routing_helpers()
    overrides = {
        'num_candidates': settings.num_candidates,
        'actor_hidden_dims': tuple(settings.hidden),
        'value_hidden_dims': tuple(settings.hidden),
        'batch_size': settings.batch_size,
    }
    for name in ('bc_coef', 'q_coef'):
        if getattr(settings, name) is not None:
            overrides[name] = getattr(settings, name)
    config = loaded.config(**overrides)
    steps = snapshot_steps(settings.steps, settings.snapshots)

    task, dataset = common.toy_task_data()
    state = np.asarray(settings.state, np.float32)
    actions, cluster_ids = state_actions(
        common.TASK_NAME, state, settings.actions_per_cluster, STATE_ACTIONS_SEED
    )
    # One key for every snapshot: the same K latents, so only the actor's change moves them.
    latent_key = seeding.analysis_eval_key(settings.seed)

    if settings.warmup_steps:
        warmup_config = loaded.config(**{**overrides, 'q_coef': 0.0})
        trainer = common.FusedTrainer(loaded.agent_class, warmup_config, dataset, [settings.seed])
        trainer.train(settings.warmup_steps)
        trainer.set_config(config)
    else:
        trainer = common.FusedTrainer(loaded.agent_class, config, dataset, [settings.seed])

    candidates, owners, cells = [], [], []
    done = 0
    for step in steps:
        trainer.train(step - done)
        done = step
        cand = np.asarray(
            common.policy_candidates(
                trainer.agent(), state[None], settings.num_candidates, latent_key
            )[0]
        )
        candidates.append(cand)
        owners.append(action_owners(helpers, cand, actions))
        cells.append(grid_owners(helpers, cand, settings.grid_size))

    owners = np.stack(owners)
    majority = cluster_owners(owners, cluster_ids, settings.num_candidates)
    handoffs = count_handoffs(owners)
    return {
        'settings': dataclasses.asdict(settings),
        'task': common.TASK_NAME,
        'state': state,
        'mode_centers': task.mode_centers(state[None])[0],
        'mode_values': task.mode_values,
        'steps': [settings.warmup_steps + s for s in steps],
        'candidates': np.stack(candidates),
        'actions': actions,
        'cluster_ids': cluster_ids,
        'owners': owners,
        'cells': np.stack(cells),
        'handoffs_per_interval': handoffs,
        'total_handoffs': int(handoffs.sum()),
        'cluster_majority_owner': majority,
        'cluster_owner_changes': cluster_owner_changes(majority).sum(axis=0),
    }


# ---------------------------------------------------------------------------------------------
# Output.


def candidate_colours(num_candidates: int) -> np.ndarray:
    """One distinct RGBA colour per candidate."""
    import matplotlib

    name = 'tab10' if num_candidates <= 10 else 'tab20'
    cmap = matplotlib.colormaps[name]
    return np.array([cmap(k % cmap.N) for k in range(num_candidates)])


def draw(result: dict, path: str) -> None:
    """Plot every snapshot's cells, candidates and dataset actions into ``path``."""
    plt = common.pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D

    num_snapshots = len(result['steps'])
    num_candidates = result['candidates'].shape[1]
    colours = candidate_colours(num_candidates)
    cols = min(num_snapshots, 3)
    rows = -(-num_snapshots // cols)
    height = 4.4 * rows + 1.6  # Plus room for the title and, at the bottom, legend and note.
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, height), squeeze=False)
    centres = np.asarray(result['mode_centers'])
    for index, ax in enumerate(axes.ravel()):
        if index >= num_snapshots:
            ax.axis('off')
            continue
        ax.imshow(
            result['cells'][index],
            origin='lower',
            extent=(-1, 1, -1, 1),
            cmap=ListedColormap(colours),
            vmin=-0.5,
            vmax=num_candidates - 0.5,
            alpha=0.3,
            interpolation='nearest',
        )
        actions = result['actions']
        ax.scatter(actions[:, 0], actions[:, 1], s=5, c=colours[result['owners'][index]], alpha=0.9)
        for value, centre in zip(result['mode_values'], centres, strict=True):
            ax.text(
                centre[0], centre[1] + 0.2, f'value {value:g}', ha='center', fontsize=8, color='0.2'
            )
        cand = result['candidates'][index]
        # Candidates that own none of the state's dataset actions are drawn hollow: they get no
        # BC pull from this state (its data is routed elsewhere).
        owns_data = np.isin(np.arange(num_candidates), result['owners'][index])
        face = np.where(owns_data[:, None], colours, np.array([1.0, 1.0, 1.0, 1.0]))
        ax.scatter(cand[:, 0], cand[:, 1], s=170, c=face, edgecolors=colours, linewidths=2.5)
        for k, (x, y) in enumerate(cand):
            ax.text(x, y, str(k), ha='center', va='center', fontsize=7, fontweight='bold')
        title = f'update {result["steps"][index]:,}'
        if index > 0:
            title += f'\n{result["handoffs_per_interval"][index - 1]} handoffs since previous'
        ax.set_title(title, fontsize=10)
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
        ax.set_aspect('equal')
        ax.set_xlabel('action dim 1 (normalised, [-1, 1])', fontsize=8)
        ax.set_ylabel('action dim 2 (normalised, [-1, 1])', fontsize=8)
        ax.tick_params(labelsize=7)

    settings = result['settings']
    changes = ', '.join(
        f'cluster {c} (value {v:g}): {n}'
        for c, (v, n) in enumerate(
            zip(result['mode_values'], result['cluster_owner_changes'], strict=True)
        )
    )
    q_text = 'agent default' if settings['q_coef'] is None else f'{settings["q_coef"]:g}'
    fig.suptitle(
        f'DROL routing at one state s = ({result["state"][0]:g}, {result["state"][1]:g}) of '
        f'{result["task"]}: K = {num_candidates} candidates with fixed latents\n'
        f'{result["total_handoffs"]} handoffs of {len(result["actions"])} dataset actions in all;'
        f' majority-owner changes per cluster: {changes} (q_coef {q_text})',
        fontsize=11,
    )

    def marker(label: str, **style) -> Line2D:
        return Line2D([], [], ls='', label=label, **{'marker': 'o', 'ms': 10, **style})

    legend = [
        marker('candidate k', mfc='C0', mec='C0', mew=2),
        marker('candidate owning no dataset action here', mfc='white', mec='C0', mew=2),
        marker('dataset action', ms=4, mfc='0.3', mec='none'),
        marker(
            "candidate's region (nearest-candidate cell)",
            marker='s',
            mfc='0.8',
            mec='none',
            alpha=0.6,
        ),
    ]
    fig.legend(
        handles=legend,
        loc='lower center',
        bbox_to_anchor=(0.5, 0.3 / height),
        ncol=4 if cols >= 3 else 2,
        fontsize=9,
        frameon=False,
    )
    fig.text(
        0.5,
        0.12 / height,
        'Colours: each dataset action and cell takes the colour of the candidate it is routed to.',
        ha='center',
        fontsize=8,
        color='0.3',
    )
    common.save_figure(fig, path, dpi=80, rect=(0, 0.75 / height, 1, 1))


def summary_lines(result: dict) -> list[str]:
    """What the command prints: handoffs per interval and cluster ownership."""
    lines = [f'handoffs (of {len(result["actions"])} dataset actions at the state):']
    for index in range(1, len(result['steps'])):
        lines.append(
            f'  updates {result["steps"][index - 1]:>7,} -> {result["steps"][index]:>7,}: '
            f'{result["handoffs_per_interval"][index - 1]}'
        )
    lines.append(f'  total: {result["total_handoffs"]}')
    for cluster, value in enumerate(result['mode_values']):
        owners = result['cluster_majority_owner'][:, cluster]
        lines.append(
            f'cluster {cluster} (value {value:g}) majority owner per snapshot: '
            f'{owners.tolist()} ({result["cluster_owner_changes"][cluster]} changes)'
        )
    return lines


def write(result: dict, out_dir: str) -> tuple[str, str]:
    """Write ``voronoi.png`` and ``voronoi.json`` (without the bulky grid) into ``out_dir``."""
    return common.write_figure(
        result, out_dir, 'voronoi', draw, numbers={k: v for k, v in result.items() if k != 'cells'}
    )
