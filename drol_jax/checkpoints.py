"""Atomic checkpoints (flax msgpack serialization) and FQL-style parameter restore."""

from __future__ import annotations

import glob
import os
import pickle
import re
import sys
from typing import Any

import flax.serialization
import jax
import numpy as np

from drol_jax.cli import ArgumentParser, reports_user_errors
from drol_jax.errors import UserError
from drol_jax.files import write_atomic

CHECKPOINT_PATTERN = 'checkpoint_{step}.msgpack'


def checkpoint_path(run_dir: str, step: int) -> str:
    """Path of the checkpoint written at ``step``."""
    return os.path.join(run_dir, CHECKPOINT_PATTERN.format(step=step))


def save(run_dir: str, step: int, state: dict[str, Any]) -> str:
    """Write ``state`` atomically: a temp file, fsync, then rename over the final name.

    A write killed half-way leaves only the temp file, which ``latest`` never picks up.
    """
    payload = flax.serialization.msgpack_serialize(flax.serialization.to_state_dict(state))
    return write_atomic(checkpoint_path(run_dir, step), lambda f: f.write(payload))


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


def official_params_path(folder: str, step: int) -> str:
    """Path of an official DROL/FQL parameter file: ``params_<step>.pkl``."""
    return os.path.join(folder, f'params_{step}.pkl')


def agent_state_from_checkpoint(path: str) -> dict:
    """The agent state dict in one of our checkpoints (a run folder holds one seed)."""
    try:
        with open(path, 'rb') as f:
            raw = flax.serialization.msgpack_restore(f.read())
        return jax.tree_util.tree_map(lambda x: x[0], raw['agents'])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise UserError(f'cannot read the agent in checkpoint {path}: {e}') from e


def restore_agent(agent, restore_path: str, restore_epoch: int):
    """Load agent parameters the way FQL does, from ``params_<epoch>.pkl`` or our checkpoint.

    The official files are pickles of ``{'agent': flax.serialization.to_state_dict(agent)}``;
    our parameter trees are the official ones, so they load as they are. From our checkpoints
    the run folder's seed is used.
    """
    official = official_params_path(restore_path, restore_epoch)
    ours = checkpoint_path(restore_path, restore_epoch)
    if os.path.exists(official):
        with open(official, 'rb') as f:
            state = pickle.load(f)['agent']
    elif os.path.exists(ours):
        state = agent_state_from_checkpoint(ours)
    else:
        raise UserError(f'--restore_path: neither {official} nor {ours} exists.')
    problem = None
    try:
        restored = flax.serialization.from_state_dict(agent, state)
        # from_state_dict does not compare shapes: parameters of other network sizes would load
        # and fail later, deep inside the first update.
        if jax.tree_util.tree_map(np.shape, restored) != jax.tree_util.tree_map(np.shape, agent):
            problem = 'the array shapes differ'
    except (ValueError, KeyError, TypeError) as e:
        problem = str(e)
    if problem is not None:
        raise UserError(
            f'--restore_path: the parameters in {restore_path} do not fit this agent '
            f'(another agent file or other network sizes?): {problem}'
        )
    return restored


def export_official(run_dir: str, step: int, out_dir: str) -> str:
    """Write the agent of our checkpoint as the official agents' ``params_<step>.pkl``."""
    state = agent_state_from_checkpoint(checkpoint_path(run_dir, step))
    os.makedirs(out_dir, exist_ok=True)
    payload = pickle.dumps({'agent': state})
    return write_atomic(official_params_path(out_dir, step), lambda f: f.write(payload))


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    """``python -m drol_jax.checkpoints export RUN_DIR --out DIR [--step N]``."""
    parser = ArgumentParser(
        prog='python -m drol_jax.checkpoints',
        description='Export a checkpoint as the official DROL/FQL params_<step>.pkl.',
    )
    commands = parser.add_subparsers(dest='command', required=True)
    export = commands.add_parser('export', help='write params_<step>.pkl for the official code')
    export.add_argument('run_dir', help='a run folder holding checkpoint_<step>.msgpack')
    export.add_argument('--step', type=int, help='checkpoint step (default: the latest)')
    export.add_argument('--out', required=True, help='folder for params_<step>.pkl')
    args = parser.parse_args(argv)
    steps = saved_steps(args.run_dir)
    step = args.step if args.step is not None else (steps[-1] if steps else None)
    if step is None:
        raise UserError(f'no checkpoint in {args.run_dir}.')
    print(export_official(args.run_dir, step, args.out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
