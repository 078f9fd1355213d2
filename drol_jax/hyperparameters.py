"""Hyperparameter rules that agent files declare, and the check that applies them.

An agent file may define ``HYPERPARAMETER_CHECKS``: a dict from a hyperparameter's name to a
rule built here, e.g. ``{'num_candidates': integer_at_least(1)}``. Before any data is loaded
the run applies those rules to the agent config; a value that breaks one is a one-line error
naming the flag and the valid range. Keys the config does not have are skipped. The run flags'
rules (``drol_jax.run_flags``) are built from the same builders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from drol_jax.errors import ConfigError, did_you_mean


class Rule(NamedTuple):
    """A test on one value and the requirement it encodes, in words."""

    test: Callable[[Any], bool]
    requirement: str


def _is_number(value: Any) -> bool:
    """True for ints and floats, not for bools (a common flag mix-up)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer_at_least(minimum: int, meaning: str = '') -> Rule:
    """An integer >= ``minimum``; ``meaning`` is appended to the message, e.g. 'K'."""
    suffix = f' ({meaning})' if meaning else ''
    return Rule(
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum,
        f'an integer >= {minimum}{suffix}',
    )


def at_least(minimum: float) -> Rule:
    """A number >= ``minimum``."""
    return Rule(lambda v: _is_number(v) and v >= minimum, f'>= {minimum}')


def positive() -> Rule:
    """A number > 0."""
    return Rule(lambda v: _is_number(v) and v > 0, '> 0')


def in_interval(low: float, high: float, low_open: bool = False) -> Rule:
    """A number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if low_open:
        return Rule(lambda v: _is_number(v) and low < v <= high, f'in ({low}, {high}]')
    return Rule(lambda v: _is_number(v) and low <= v <= high, f'in [{low}, {high}]')


def one_of(*choices: Any) -> Rule:
    """One of the listed values."""
    return Rule(lambda v: v in choices, ' or '.join(repr(c) for c in choices))


# What the library itself needs from every agent config: a name for run folders and the batch
# size it samples on the device.
REQUIRED = {
    'agent_name': Rule(lambda v: isinstance(v, str) and v != '', 'a non-empty string'),
    'batch_size': integer_at_least(1),
}


def check_agent_config(config: Mapping[str, Any], rules: Mapping[str, Rule]) -> None:
    """Raise ``ConfigError`` for a missing required entry or a value that breaks a rule."""
    for key, rule in REQUIRED.items():
        if key not in config:
            raise ConfigError(
                f'the agent config has no {key!r} entry; get_config() must define it '
                f'({rule.requirement}).'
            )
    for key, rule in {**REQUIRED, **rules}.items():
        if key in config and not _passes(rule, config[key]):
            raise ConfigError(f'--agent.{key} must be {rule.requirement}, got {config[key]!r}.')


def check_known(names: Iterable[str], known: Iterable[str]) -> None:
    """Raise ``ConfigError`` for the first override naming no hyperparameter of the agent."""
    known = sorted(known)
    for name in names:
        top = name.split('.')[0]
        if top not in known:
            raise ConfigError(
                f'unknown agent hyperparameter {top!r} in --agent.{name}.'
                f'{did_you_mean(top, known)} '
                f'Known: {", ".join(known)}.'
            )


def _passes(rule: Rule, value: Any) -> bool:
    """Apply a rule, treating a type error (a string where a number belongs) as failure."""
    try:
        return bool(rule.test(value))
    except TypeError:
        return False
