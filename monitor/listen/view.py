"""What `audio-monitor listen` shows, as frozen data, and its rendering to text lines."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from monitor.frames import Scores
from monitor.pipeline.worker import rms_dbfs

BAR_WIDTH = 10
MAX_LABEL_WIDTH = 32  # longer labels are cut so the scores and bars stay in one column
FULL, EMPTY = "█", "░"


@dataclass(frozen=True)
class SetView:
    """One label set's best labels in one window, best first."""

    name: str
    top: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class SourceView:
    """One source as shown: its latest window's end, level and top labels per set.

    `window_end` is None (and `sets` empty) until its first window is scored.
    """

    source_id: str
    window_end: datetime | None = None
    level_dbfs: float | None = None
    sets: tuple[SetView, ...] = ()


@dataclass(frozen=True)
class View:
    """The whole screen: a title line, then every source in config order."""

    title: str
    sources: tuple[SourceView, ...]


def source_view(scores: Sequence[Scores], top_k: int) -> SourceView:
    """One window's scores (one per label set of its source) as shown: the top `top_k`."""
    window = scores[0].window
    return SourceView(
        window.source_id,
        window.end_time,
        rms_dbfs(window.samples),
        tuple(SetView(s.label_set, tuple(s.top(top_k))) for s in scores),
    )


def bar(score: float, width: int = BAR_WIDTH) -> str:
    """`width` cells, filled in proportion to the score (clipped to 0..1)."""
    filled = round(min(max(score, 0.0), 1.0) * width) if math.isfinite(score) else 0
    return FULL * filled + EMPTY * (width - filled)


def _clock(when: datetime) -> str:
    return when.astimezone().strftime("%H:%M:%S")


def _level(level_dbfs: float | None) -> str:
    if level_dbfs is None:
        return ""
    return "   silent" if math.isinf(level_dbfs) else f"{level_dbfs:6.1f} dBFS"


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: max(0, width - 1)] + "…"


def render(view: View, width: int) -> list[str]:
    """The screen as lines, none longer than `width` characters."""
    labels = [label for s in view.sources for v in s.sets for label, _ in v.top]
    column = min(MAX_LABEL_WIDTH, max((len(label) for label in labels), default=0))
    lines = [view.title]
    for source in view.sources:
        if source.window_end is None:
            lines.append(f"{source.source_id}  waiting for the first window…")
            continue
        lines.append(
            f"{source.source_id}  {_clock(source.window_end)}  {_level(source.level_dbfs)}".rstrip()
        )
        for label_set in source.sets:
            lines.append(f"  {label_set.name}")
            for label, score in label_set.top:
                name = _cut(label, column)
                lines.append(f"    {name:<{column}}  {score:.3f} {bar(score)}")
    return [_cut(line, width) for line in lines]


def render_plain(source: SourceView) -> str:
    """One line for one source's latest window, for a pipe or a log: no escape codes, no bars."""
    parts = [source.source_id]
    if source.window_end is not None:
        parts.insert(0, source.window_end.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    level = _level(source.level_dbfs).strip()
    if level:
        parts.append(level)
    sets = [
        f"{s.name}: " + ", ".join(f"{label} {score:.3f}" for label, score in s.top)
        for s in source.sets
    ]
    return " | ".join([" ".join(parts), *sets])
