"""Agent files: how the library loads one and what it reads from it.

An agent file (``agents/drol.py``, ``agents/fql.py`` or a user's own) must define
``get_config()`` and exactly one class with FQL's interface (``create``, ``update``,
``total_loss``, ``sample_actions``). It may also define, and the library then uses:

- ``HYPERPARAMETER_CHECKS``: ``{name: rule}`` with rules from ``drol_jax.hyperparameters``;
  checked before any data is loaded, one line per broken rule.
- ``PROGRESS_METRICS``: metric names (``'actor/bc_loss'``) shown on the progress bar.
- ``PUBLISHED_SETTINGS``: ``{preset: {task family pattern: {hyperparameter: value}}}``; the
  ``--preset`` flag applies them (see ``drol_jax.presets``).
- ``PRESET_LABELS``: ``{preset: display name}`` for tables, e.g. ``{'paper': 'DROL(16)'}``.

A file without the optional names still runs: no extra checks, a default progress bar, and no
preset. Nothing in the library names an agent, so a new variant is one new file.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from drol_jax.errors import AgentFileError
from drol_jax.hyperparameters import Rule

AGENT_METHODS = ('create', 'update', 'total_loss', 'sample_actions')
DEFAULT_PROGRESS_METRICS = ('critic/critic_loss', 'actor/q')


@dataclasses.dataclass(frozen=True)
class AgentFile:
    """An imported agent file: its class and the conventions it declares."""

    path: str
    module: ModuleType
    agent_class: type
    hyperparameter_checks: Mapping[str, Rule]
    progress_metrics: tuple[str, ...]
    published_settings: Mapping[str, Mapping[str, Mapping[str, Any]]]
    preset_labels: Mapping[str, str]

    def default_config(self):
        """A fresh ``get_config()`` of the file (no command-line overrides)."""
        return self.module.get_config()


def import_module(path: str) -> ModuleType:
    """Import an agent file by path, or raise a one-line ``AgentFileError``."""
    if not os.path.isfile(path):
        raise AgentFileError(f'--agent file {path!r} does not exist.')
    module_name = f'_agent_file_{os.path.splitext(os.path.basename(path))[0]}'
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None:  # Python imports only .py files (and compiled modules) by path.
        raise AgentFileError(
            f'--agent file {path!r} is not a Python file: an agent file is a .py file that '
            'defines get_config() and an agent class.'
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name.
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - any failure of a user's file is reported in one line.
        raise AgentFileError(
            f'--agent file {path!r} could not be imported: {type(e).__name__}: {e}'
        ) from e
    if not callable(getattr(module, 'get_config', None)):
        raise AgentFileError(f'--agent file {path!r} defines no get_config().')
    return module


def load_agent_file(path: str, agent_name: str | None = None) -> AgentFile:
    """Import ``path``, find its agent class and read its optional conventions.

    If the file defines several classes with the interface, the one whose name starts with
    ``agent_name`` (case-insensitive, 'drol' -> ``DROLAgent``) is chosen.
    """
    module = import_module(path)
    candidates = [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if obj.__module__ == module.__name__ and all(hasattr(obj, m) for m in AGENT_METHODS)
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
    return AgentFile(
        path=os.path.abspath(path),
        module=module,
        agent_class=candidates[0],
        hyperparameter_checks=getattr(module, 'HYPERPARAMETER_CHECKS', {}),
        progress_metrics=tuple(getattr(module, 'PROGRESS_METRICS', DEFAULT_PROGRESS_METRICS)),
        published_settings=getattr(module, 'PUBLISHED_SETTINGS', {}),
        preset_labels=getattr(module, 'PRESET_LABELS', {}),
    )
