"""SIGTERM and SIGINT at any moment of a run: a clean stop, never a traceback.

- Before training starts (imports, data loading, agent creation): there is nothing to save, so
  ``exit_quietly_before_training`` makes the process print one line and exit with status
  128 + signum (143 for SIGTERM, 130 for SIGINT), which the sweep launcher reads as "stopped".
- Once the training loop runs, ``StopFlag`` turns the signal into a flag the loop reads between
  blocks: it saves a checkpoint, flushes its logs and exits 0 (then ``--resume``).

This module imports nothing heavy, so main.py installs the first handler before importing JAX.
"""

from __future__ import annotations

import os
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Seconds the unwinding SystemExit has before the process ends without it (see below).
EXIT_GRACE_S = 10.0


def _exit_before_training(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    # os.write, not print: a handler may interrupt a print, and buffered writes are not reentrant.
    os.write(
        2,
        f'Stopped by {name} before training started (nothing to save); run the same command '
        'again to start.\n'.encode(),
    )
    # Python swallows an exception raised while the handler interrupts a finaliser or a
    # callback ("Exception ignored in ..."), and the start-up would then go on until SLURM's
    # SIGKILL. Measured once under heavy load: a cancelled SLURM job recorded as failed. The
    # timer ends the process with the same status if the SystemExit has not done so in time.
    status = 128 + signum
    timer = threading.Timer(EXIT_GRACE_S, os._exit, args=(status,))
    timer.daemon = True  # A normal exit does not wait for it.
    timer.start()
    raise SystemExit(status)


def exit_quietly_before_training() -> None:
    """Make SIGTERM/SIGINT end the process with one line and status 128 + signum.

    ``SystemExit`` unwinds the stack (``finally`` blocks run, atomic writes leave no half file)
    and prints no traceback. ``StopFlag`` takes over while the training loop runs.
    """
    for signum in SIGNALS:
        signal.signal(signum, _exit_before_training)


class StopFlag:
    """Turns SIGTERM/SIGINT into a flag the training loop checks between blocks (preemption).

    Use as a context manager around the loop; the previous handlers come back on exit.
    """

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self) -> StopFlag:
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
