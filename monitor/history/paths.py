"""Where the history database lives when history.path is not set."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

FILE_NAME = "history.sqlite3"


def resolve_history_path(configured: Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """history.path, else $STATE_DIRECTORY/history.sqlite3, else ~/.local/state/audio-monitor/."""
    env = os.environ if environ is None else environ
    if configured is not None:
        return configured.expanduser()
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / FILE_NAME
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".local" / "state" / "audio-monitor" / FILE_NAME
