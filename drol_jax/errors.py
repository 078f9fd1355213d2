"""Errors that describe a user mistake or a missing resource.

``main.py`` prints these as one line (no traceback) and exits with status 2; anything else is a
bug and keeps its traceback.
"""


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
