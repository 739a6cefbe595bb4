"""Where the history database lives when history.path is not set."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from monitor.config.paths import state_path

FILE_NAME = "history.sqlite3"


def resolve_history_path(configured: Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """history.path, else $STATE_DIRECTORY/history.sqlite3, else ~/.local/state/audio-monitor/."""
    return state_path(configured, FILE_NAME, environ=environ)
