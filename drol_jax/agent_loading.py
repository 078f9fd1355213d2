"""Load an agent class from an agent file path (no registry: any file with the interface works)."""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys

from drol_jax.errors import AgentFileError

AGENT_METHODS = ('create', 'update', 'total_loss', 'sample_actions')


def load_agent_class(path: str, agent_name: str | None = None) -> type:
    """Import ``path`` and return the one class in it with the agent interface.

    If the file defines several such classes, the one whose name starts with ``agent_name``
    (case-insensitive, e.g. 'drol' -> ``DROLAgent``) is chosen.
    """
    if not os.path.isfile(path):
        raise AgentFileError(f'--agent file {path!r} does not exist.')
    module_name = f'_agent_file_{os.path.splitext(os.path.basename(path))[0]}'
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name.
    spec.loader.exec_module(module)
    candidates = [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if obj.__module__ == module_name and all(hasattr(obj, m) for m in AGENT_METHODS)
    ]
    if len(candidates) > 1 and agent_name:
        named = [c for c in candidates if c.__name__.lower().startswith(agent_name.lower())]
        candidates = named or candidates
    if len(candidates) != 1:
        found = [c.__name__ for c in candidates] or 'none'
        raise AgentFileError(
            f'--agent file {path!r} must define exactly one class with methods '
            f'{", ".join(AGENT_METHODS)}; found {found}.'
        )
    return candidates[0]
