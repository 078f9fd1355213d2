"""Atomic checkpoints (flax msgpack serialization) and FQL-style parameter restore."""

from __future__ import annotations

import glob
import os
import pickle
import re
from typing import Any

import flax.serialization

from drol_jax.errors import UserError

CHECKPOINT_PATTERN = 'checkpoint_{step}.msgpack'


def checkpoint_path(run_dir: str, step: int) -> str:
    """Path of the checkpoint written at ``step``."""
    return os.path.join(run_dir, CHECKPOINT_PATTERN.format(step=step))


def save(run_dir: str, step: int, state: dict[str, Any]) -> str:
    """Write ``state`` atomically: a temp file, fsync, then rename over the final name.

    A write killed half-way leaves only the temp file, which ``latest`` never picks up.
    """
    path = checkpoint_path(run_dir, step)
    tmp = f'{path}.tmp'
    with open(tmp, 'wb') as f:
        f.write(flax.serialization.msgpack_serialize(flax.serialization.to_state_dict(state)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def saved_steps(run_dir: str) -> list[int]:
    """Steps of the complete checkpoints in ``run_dir``, ascending."""
    steps = []
    for path in glob.glob(os.path.join(run_dir, CHECKPOINT_PATTERN.format(step='*'))):
        match = re.search(r'checkpoint_(\d+)\.msgpack$', path)
        if match:
            steps.append(int(match.group(1)))
    return sorted(steps)


def load(path: str, target: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint into the structure of ``target`` (arrays, agents, buffers)."""
    try:
        with open(path, 'rb') as f:
            raw = flax.serialization.msgpack_restore(f.read())
        return flax.serialization.from_state_dict(target, raw)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f'cannot load checkpoint {path}: {type(e).__name__}: {e}') from e


def restore_agent(agent, restore_path: str, restore_epoch: int):
    """Load agent parameters the way FQL does, from ``params_<epoch>.pkl`` or our checkpoint.

    FQL's files are pickles of ``{'agent': state_dict}``; our checkpoints hold the (seed-stacked)
    agents, of which the first seed is used.
    """
    fql_file = os.path.join(restore_path, f'params_{restore_epoch}.pkl')
    ours = checkpoint_path(restore_path, restore_epoch)
    if os.path.exists(fql_file):
        with open(fql_file, 'rb') as f:
            return flax.serialization.from_state_dict(agent, pickle.load(f)['agent'])
    if os.path.exists(ours):
        with open(ours, 'rb') as f:
            raw = flax.serialization.msgpack_restore(f.read())
        first_seed = jax_tree_first(raw['agents'])
        return flax.serialization.from_state_dict(agent, first_seed)
    raise UserError(f'--restore_path: neither {fql_file} nor {ours} exists.')


def jax_tree_first(state_dict: dict) -> dict:
    """The first entry along the leading (seed) axis of every array in a nested state dict."""
    if isinstance(state_dict, dict):
        return {k: jax_tree_first(v) for k, v in state_dict.items()}
    return state_dict[0]
