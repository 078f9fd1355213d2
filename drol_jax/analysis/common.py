"""Shared pieces of the analysis figures: loading an agent file, fused training, candidates.

The library never imports ``agents/``: every tool receives the agent file path, loads the class
with ``load_agent_file`` and reaches DROL's pure routing helpers through the class's module.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from drol_jax import seeding
from drol_jax.agent_file import AgentFile, load_agent_file
from drol_jax.data import to_device
from drol_jax.envs.toy import DATASET_SEED, DATASET_SIZE, TASKS, ToyTask
from drol_jax.errors import AgentFileError, NonFiniteLossError
from drol_jax.files import write_json_atomic
from drol_jax.hyperparameters import check_agent_config
from drol_jax.networks import broadcast_states
from drol_jax.updates import first_nonfinite, make_train_block, stack_agents, unstack_agent

TASK_NAME = 'toy-multimodal'  # The task every training figure uses.


class RoutingHelpers(NamedTuple):
    """DROL's pure routing helpers, taken from the loaded agent file's module."""

    candidate_distances: Callable[[jax.Array, jax.Array], jax.Array]
    route_to_nearest: Callable[[jax.Array], jax.Array]
    candidate_spread: Callable[[jax.Array], jax.Array]


class LoadedAgent(NamedTuple):
    """An agent file: its class, module (``get_config``, pure helpers) and checks."""

    agent_class: type
    module: Any
    agent_file: AgentFile

    def config(self, **overrides: Any) -> Any:
        """The file's ``get_config()`` with ``overrides`` applied and checked."""
        config = self.module.get_config()
        unknown = sorted(set(overrides) - set(config))
        if unknown:
            raise AgentFileError(f'agent config has no {unknown}; it has {sorted(config)}.')
        config.update(overrides)
        check_agent_config(config, self.agent_file.hyperparameter_checks)
        return config

    def routing_helpers(self) -> RoutingHelpers:
        """DROL's routing helpers, or a clear error if the agent file does not define them."""
        missing = [name for name in RoutingHelpers._fields if not hasattr(self.module, name)]
        if missing:
            raise AgentFileError(
                f'agent file of {self.agent_class.__name__} lacks the routing helpers {missing}; '
                'this figure needs a DROL agent file.'
            )
        return RoutingHelpers(*(getattr(self.module, name) for name in RoutingHelpers._fields))


def load_agent(path: str) -> LoadedAgent:
    """Load the agent class in ``path`` together with its module."""
    agent_file = load_agent_file(path)
    return LoadedAgent(agent_file.agent_class, agent_file.module, agent_file)


class FusedTrainer:
    """Several seeds of one agent config trained together with the fused update blocks.

    Uses ``make_train_block`` on device-resident data, as ``drol_jax.train`` does, so the
    figures see the same training as a real run (per-update host work would dominate at the
    small network sizes used here).
    """

    def __init__(self, agent_class: type, config: Any, dataset: dict, seeds: list[int]):
        self.data = to_device(dataset)
        ex_obs, ex_act = dataset['observations'][:1], dataset['actions'][:1]
        self.agents = stack_agents([agent_class.create(s, ex_obs, ex_act, config) for s in seeds])
        self.keys = seeding.sampler_keys(list(seeds))
        self.num_seeds = len(seeds)
        self.steps = 0
        self._train_block = make_train_block(int(config['batch_size']))

    def train(self, num_updates: int) -> dict[str, np.ndarray]:
        """Run ``num_updates`` updates per seed; returns the last update's metrics per seed."""
        if num_updates <= 0:
            return {}
        self.agents, self.keys, info, first_bad = self._train_block(
            self.agents, self.keys, self.data, num_updates
        )
        bad = first_nonfinite(jax.device_get(first_bad))
        if bad is not None:
            name, seed_index, update = bad
            raise NonFiniteLossError(
                f'{name} became non-finite for seed index {seed_index} at update '
                f'{self.steps + update + 1}.'
            )
        self.steps += num_updates
        return jax.device_get(info)

    def set_config(self, config: Any) -> None:
        """Continue training with other hyperparameters (same network shapes)."""
        action_dim = self.data['actions'].shape[-1]
        self.agents = self.agents.replace(
            config=flax.core.FrozenDict(**config, action_dim=action_dim)
        )

    def agent(self, index: int = 0) -> Any:
        """One seed's agent."""
        return unstack_agent(self.agents, index)


def toy_task_data() -> tuple[ToyTask, dict[str, np.ndarray]]:
    """The figures' toy task and its training set, the one a run on that task trains on."""
    task = TASKS[TASK_NAME]
    return task, task.make_dataset(DATASET_SIZE, DATASET_SEED)


def policy_candidates(agent: Any, observations: np.ndarray, num_latents: int, key) -> jax.Array:
    """``num_latents`` single-pass actions per state, shape (N, num_latents, action_dim).

    Goes through the public ``sample_actions``: the states are tiled ``num_latents`` times and
    one key draws a latent per copy, so the same key gives the same latents at every snapshot.
    """
    tiled = broadcast_states(jnp.asarray(observations, jnp.float32), num_latents)
    return agent.sample_actions(tiled, seed=key)


def write_json(path: str, payload: dict) -> None:
    """Write JSON (numpy values converted) and create the folder if needed."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_json_atomic(path, payload)


def write_figure(result: dict, out_dir: str, name: str, draw, numbers: dict | None = None):
    """Draw ``result`` to ``<name>.png`` and save ``numbers`` (default: ``result``) as JSON.

    Returns the two paths.
    """
    os.makedirs(out_dir, exist_ok=True)
    png, json_path = os.path.join(out_dir, f'{name}.png'), os.path.join(out_dir, f'{name}.json')
    draw(result, png)
    write_json(json_path, result if numbers is None else numbers)
    return png, json_path


def pyplot():
    """The pyplot module on matplotlib's Agg backend, so figures need no display."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def k_axes(axes, ks, xlabel: str, legend_size: int) -> None:
    """Finish axes whose x is K: log-2 scale with a tick at every K, a grid and a legend."""
    for ax in axes:
        ax.set_xscale('log', base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3, which='both')
        ax.legend(fontsize=legend_size)


def save_figure(fig, path: str, dpi: int, rect: tuple[float, ...] | None = None) -> None:
    """Lay ``fig`` out (inside ``rect``, figure fraction), write it to ``path`` and close it."""
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
