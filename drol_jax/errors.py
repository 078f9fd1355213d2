"""Errors that describe a user mistake or a missing resource, and how to suggest a fix.

``main.py`` prints these as one line (no traceback) and exits with status 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem the user can fix: a bad flag, a missing file, an unknown environment."""


class UnknownEnvError(UserError):
    """The environment name matches no registered family."""


class DatasetError(UserError):
    """A dataset is missing, corrupt, or cannot be obtained on this machine."""


class ConfigError(UserError):
    """A flag or agent hyperparameter has an invalid value."""


class AgentFileError(UserError):
    """The ``--agent`` file is missing or does not follow the agent interface."""


class NonFiniteLossError(UserError):
    """Training produced a NaN or infinite metric."""


class Interrupted(UserError):
    """SIGTERM or SIGINT stopped the program before its work could be saved.

    Not a mistake: the program prints the message as one line and exits with status
    128 + ``signum`` (143, 130), which schedulers and the sweep launcher read as "stopped".
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def did_you_mean(name: str, known: Iterable[str], n: int = 2, cutoff: float = 0.6) -> str:
    """`` Did you mean 'x' or 'y'?`` for the closest known names, or '' when none is close."""
    close = difflib.get_close_matches(name, sorted(known), n=n, cutoff=cutoff)
    return f' Did you mean {" or ".join(repr(c) for c in close)}?' if close else ''
