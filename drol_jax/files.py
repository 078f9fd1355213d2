"""Atomic file writes: a reader (or a resumed run) never sees a half-written file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import IO, Any


def write_atomic(path: str, write: Callable[[IO], None], mode: str = 'wb') -> str:
    """Call ``write(f)`` on a temp file beside ``path``, fsync it, then rename it over ``path``.

    A process killed half-way leaves only ``<path>.tmp``, which no reader looks at.
    """
    tmp = f'{path}.tmp'
    with open(tmp, mode) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str, payload: Any) -> str:
    """Write ``payload`` as indented JSON atomically; numpy scalars become plain numbers."""
    return write_atomic(
        path, lambda f: json.dump(payload, f, indent=2, default=_json_default), mode='w'
    )


def json_ready(payload: Any) -> Any:
    """``payload`` as it reads back from JSON: tuples become lists, numpy scalars numbers."""
    return json.loads(json.dumps(payload, default=_json_default))


def _json_default(value: Any) -> Any:
    """JSON fallback: numpy scalars and arrays through ``.item()``/``.tolist()``, else ``str``."""
    if hasattr(value, 'ndim') and getattr(value, 'ndim', 0) > 0:
        return value.tolist()
    return value.item() if hasattr(value, 'item') else str(value)
