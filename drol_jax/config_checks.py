"""Reject invalid hyperparameters before any heavy work, with one clear sentence each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drol_jax.errors import ConfigError

# Agent keys checked when an agent config has them: (test, requirement in words).
_AGENT_RULES = {
    'batch_size': (lambda v: isinstance(v, int) and v >= 1, 'an integer >= 1'),
    'num_candidates': (lambda v: isinstance(v, int) and v >= 1, 'an integer >= 1 (K)'),
    'critic_num_candidates': (lambda v: isinstance(v, int) and v >= 1, 'an integer >= 1'),
    'inference_num_candidates': (lambda v: isinstance(v, int) and v >= 1, 'an integer >= 1'),
    'flow_steps': (lambda v: isinstance(v, int) and v >= 1, 'an integer >= 1'),
    'lr': (lambda v: v > 0, '> 0'),
    'bc_coef': (lambda v: v >= 0, '>= 0'),
    'q_coef': (lambda v: v >= 0, '>= 0'),
    'alpha': (lambda v: v >= 0, '>= 0'),
    'discount': (lambda v: 0 <= v <= 1, 'in [0, 1]'),
    'tau': (lambda v: 0 < v <= 1, 'in (0, 1]'),
    'q_agg': (lambda v: v in ('mean', 'min'), "'mean' or 'min'"),
    'actor_q_agg': (lambda v: v in ('mean', 'min'), "'mean' or 'min'"),
}


def check_agent_config(config: Mapping[str, Any]) -> None:
    """Validate the agent hyperparameters that are present; unknown keys pass through."""
    if 'agent_name' not in config:
        raise ConfigError("the agent config must have an 'agent_name' entry.")
    for key, (ok, requirement) in _AGENT_RULES.items():
        if key in config and not _safe(ok, config[key]):
            raise ConfigError(f'--agent.{key} must be {requirement}, got {config[key]!r}.')


def check_nonnegative(**values: int) -> None:
    """Raise ``ConfigError`` naming the first negative flag."""
    for name, value in values.items():
        if value < 0:
            raise ConfigError(f'--{name} must be >= 0, got {value}.')


def _safe(test, value) -> bool:
    """Apply a rule, treating a type error (e.g. a string where a number belongs) as failure."""
    try:
        return bool(test(value))
    except TypeError:
        return False
