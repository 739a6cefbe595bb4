"""Files replaced whole: readers see the old or the new content, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def atomic_write(path: Path, write: Callable[[Any], object]) -> None:
    """Write through a temporary file in the same directory, fsync it, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, staged = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staged, path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    payload = json.dumps(data, indent=1, sort_keys=True).encode("utf-8")
    atomic_write(path, lambda handle: handle.write(payload))
