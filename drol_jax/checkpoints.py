"""Atomic checkpoints (flax msgpack serialization) and FQL-style parameter restore."""

from __future__ import annotations

import glob
import os
import pickle
import re
import sys
from collections.abc import Mapping
from typing import Any

import flax.serialization
import flax.traverse_util
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
    our agents' state dicts are the official ones (fields, parameter trees, optimizer state), so
    they load as they are. From our checkpoints the run folder's seed is used. A file whose
    structure differs from the agent's is a one-line error naming the differences.
    """
    official = official_params_path(restore_path, restore_epoch)
    ours = checkpoint_path(restore_path, restore_epoch)
    if os.path.exists(official):
        source = official
        try:
            with open(official, 'rb') as f:
                state = pickle.load(f)['agent']
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported in one line.
            raise UserError(
                f'--restore_path: cannot read {official}: {type(e).__name__}: {e}'
            ) from e
    elif os.path.exists(ours):
        source = ours
        state = agent_state_from_checkpoint(ours)
    else:
        raise UserError(f'--restore_path: neither {official} nor {ours} exists.')
    # from_state_dict neither compares shapes nor rejects unknown dict keys, so the whole
    # structure is compared first: otherwise a misfit would load and fail deep in an update.
    problem = state_mismatch(flax.serialization.to_state_dict(agent), state)
    if problem is not None:
        raise UserError(
            f'--restore_path: the parameters in {source} do not fit this agent: {problem}'
        )
    restored = flax.serialization.from_state_dict(agent, state)
    # Same dtypes as a fresh agent (the official step is a Python int), so compiled updates fit.
    return jax.tree_util.tree_map(lambda ref, x: np.asarray(x, ref.dtype), agent, restored)


def _shapes(state) -> dict[str, tuple | None]:
    """``{'network/params/.../kernel': shape}`` of a state dict; ``None`` marks an empty dict."""
    flat = flax.traverse_util.flatten_dict(state, keep_empty_nodes=True, sep='/')
    return {
        path: None if leaf is flax.traverse_util.empty_node else np.shape(leaf)
        for path, leaf in flat.items()
    }


def _absent_subtrees(paths: set[str], other: set[str]) -> list[str]:
    """For each path, its topmost ancestor that ``other`` lacks entirely; params first."""
    present = {'/'.join(p.split('/')[:i]) for p in other for i in range(1, p.count('/') + 2)}
    roots = set()
    for path in paths:
        parts = path.split('/')
        ancestors = ('/'.join(parts[:i]) for i in range(1, len(parts) + 1))
        root = next((a for a in ancestors if a not in present), None)
        if root is not None:
            roots.add(root)
    # The optimizer state repeats the parameter tree: list the parameters' paths first.
    return sorted(roots, key=lambda p: ('opt_state' in p, p))


def _listed(items: list[str], limit: int = 3) -> str:
    """The first ``limit`` items, and how many more."""
    more = f' (+{len(items) - limit} more)' if len(items) > limit else ''
    return ', '.join(items[:limit]) + more


def _networks(state) -> set[str] | None:
    """The network names (``modules_<name>``) of a state dict's parameters, if it has any."""
    try:
        return set(state['network']['params'])
    except (KeyError, TypeError):
        return None


def state_mismatch(expected, found) -> str | None:
    """What differs between two agent state dicts (fields, arrays, shapes), or None if nothing.

    One sentence: the missing and unknown entries (whole subtrees named once), the arrays whose
    shapes differ, and the likely cause where the differences show it.
    """
    if not isinstance(found, Mapping):
        return f'it holds a {type(found).__name__}, not an agent state dict.'
    want, have = _shapes(expected), _shapes(found)
    differences = []
    missing = _absent_subtrees(set(want) - set(have), set(have))
    unknown = _absent_subtrees(set(have) - set(want), set(want))
    if missing:
        differences.append(f'the file lacks {_listed(missing)}')
    if unknown:
        differences.append(f'the agent has no {_listed(unknown)}')
    reshaped = sorted(
        (p for p in set(want) & set(have) if want[p] != have[p]),
        key=lambda p: ('opt_state' in p, p),
    )
    if reshaped:
        shown = [f'{p} is {have[p]} in the file, {want[p]} here' for p in reshaped]
        differences.append(f'shapes differ: {_listed(shown, limit=2)}')
    if not differences:
        return None
    theirs, ours = _networks(found), _networks(expected)
    if theirs is not None and ours is not None and theirs != ours:
        cause = (
            f"its networks are {', '.join(sorted(theirs))} and this agent's are "
            f'{", ".join(sorted(ours))}: parameters of another agent'
        )
    elif reshaped and not missing and not unknown:
        cause = 'other network sizes, or a task with other observation or action sizes'
    else:
        cause = None
    return '; '.join(differences) + (f' ({cause}?).' if cause else '.')


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
