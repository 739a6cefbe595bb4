"""`history:`: every scored window's audio embedding kept on disk for `audio-monitor search`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from monitor.config.base import StrictModel


class HistoryConfig(StrictModel):
    """The audio embeddings of the past, kept in one SQLite file for free-text search."""

    enabled: bool = Field(
        default=False,
        description=(
            "Keep every scored window's audio embedding (float16), source, times and level, "
            "so `audio-monitor search` can find sounds afterwards. Off by default."
        ),
    )
    path: Path | None = Field(
        default=None,
        description=(
            "The SQLite file; None = $STATE_DIRECTORY/history.sqlite3 under systemd, else "
            "~/.local/state/audio-monitor/history.sqlite3."
        ),
    )
    max_age_days: float = Field(
        default=30.0,
        gt=0,
        le=3650,
        description="Windows older than this are deleted (checked every few minutes).",
    )
    max_megabytes: float = Field(
        default=2000.0,
        gt=0,
        description=(
            "When the file holds more than this, the oldest windows (of any source) are deleted "
            "first; about 90 MB per source per day at a 1 s hop with a 512-d model."
        ),
    )
