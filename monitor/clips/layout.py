"""Where clips go: the clips directory and each event's clip and sidecar names within it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from monitor.config import slugify
from monitor.config.paths import state_path
from monitor.frames import Event

SIDECAR_SUFFIX = ".json"


def resolve_clips_root(directory: Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """The configured directory, else $STATE_DIRECTORY/clips, else ~/.local/state/..."""
    return state_path(directory, "clips", environ=environ)


def clip_name(start: Event, fmt: str) -> str:
    """`<source>/<YYYY-MM-DD>/<HHMMSS>_<set>_<label>_<event id 8>.<fmt>`, relative to the clips
    directory, from the event's first detecting window (UTC): known when the event starts, so
    the end message can name a clip that is finished only after the post-roll."""
    d = start.detection
    moment = d.window_start
    return (
        f"{d.source_id}/{moment:%Y-%m-%d}/{moment:%H%M%S}_{slugify(d.label_set)}_"
        f"{slugify(d.label) or 'label'}_{start.event_id.replace('-', '')[:8]}.{fmt}"
    )


def sidecar_name(clip: str) -> str:
    """The sidecar of a clip: the same name with .json."""
    return str(Path(clip).with_suffix(SIDECAR_SUFFIX))
