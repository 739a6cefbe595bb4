"""The clips recorded around a match, found by their JSON sidecars in the clips directory."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipRef:
    """One saved clip: its path relative to the clips directory, source and time span."""

    clip: str
    source_id: str
    start_s: float
    end_s: float


def load_clips(directory: Path) -> list[ClipRef]:
    """Every readable sidecar `<directory>/**/*.json` (keys clip, source, start_time, end_time
    in ISO-8601); the others are skipped with a debug line."""
    found = []
    for path in sorted(directory.rglob("*.json")):
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            found.append(
                ClipRef(
                    str(meta["clip"]),
                    str(meta["source"]),
                    _seconds(str(meta["start_time"])),
                    _seconds(str(meta["end_time"])),
                )
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.debug("not a clip sidecar: %s (%s)", path, err)
    return found


def covering(clips: list[ClipRef], source_id: str, start_s: float, end_s: float) -> tuple[str, ...]:
    """The clips of `source_id` that overlap [start_s, end_s], by start time."""
    hits = [
        c for c in clips if c.source_id == source_id and c.start_s < end_s and c.end_s > start_s
    ]
    return tuple(c.clip for c in sorted(hits, key=lambda c: c.start_s))


def _seconds(text: str) -> float:
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"{text!r} names no time zone")
    return when.timestamp()
