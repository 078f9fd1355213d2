"""What every command-line entry point shares: user mistakes end in one ``error:`` line, status 2.

``main.py``, ``python -m drol_jax.sweep``, ``drol_jax.plot``, ``drol_jax.presets``,
``drol_jax.checkpoints`` and the others report a ``UserError`` (and a bad argument) the same
way: one line on stderr that starts with ``error:``, and exit status 2. Anything else is a bug
and keeps its traceback. Warnings are one ``warning:`` line each (``print_warning``).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import NoReturn, ParamSpec

from tqdm.auto import tqdm

from drol_jax.errors import UserError

USER_ERROR_STATUS = 2
_P = ParamSpec('_P')


def print_error(message: object) -> None:
    """Write ``error: <first line of message>`` to stderr."""
    lines = str(message).strip().splitlines() or ['unknown error']
    print(f'error: {lines[0]}', file=sys.stderr, flush=True)


def print_warning(message: object) -> None:
    """Write ``warning: <first line of message>`` to stderr (above any progress bar)."""
    lines = str(message).strip().splitlines() or ['unknown warning']
    tqdm.write(f'warning: {lines[0]}', file=sys.stderr)


def fail(message: object) -> NoReturn:
    """Print one ``error:`` line and exit with status 2 (for code outside any ``main``)."""
    print_error(message)
    sys.exit(USER_ERROR_STATUS)


def reports_user_errors(main: Callable[_P, int | None]) -> Callable[_P, int]:
    """Wrap an entry point: a ``UserError`` becomes one ``error:`` line and the return value 2.

    The wrapped function returns the entry point's status (``None`` counts as 0), ready for
    ``sys.exit(main())``.
    """

    @functools.wraps(main)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> int:
        try:
            status = main(*args, **kwargs)
        except UserError as e:
            print_error(e)
            return USER_ERROR_STATUS
        return 0 if status is None else status

    return wrapper


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose bad arguments end in one ``error:`` line and status 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        """Print ``error: <message> (see <prog> --help)`` and exit with status 2."""
        fail(f'{message} (see {self.prog} --help)')
