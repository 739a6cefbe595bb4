"""What a search asks for and what it finds, as data; report.py renders them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Format = Literal["table", "json", "csv"]

DEFAULT_TOP = 10


@dataclass(frozen=True)
class SearchOptions:
    """Which windows are scored and which matches are kept."""

    texts: tuple[str, ...]
    since_s: float | None = None  # Unix seconds; None = from the first window
    until_s: float | None = None
    source_id: str | None = None
    threshold: float | None = None  # keep every range whose windows score at least this
    top: int | None = None  # else: the best ranges, per text (DEFAULT_TOP when neither)
    softmax: bool = False  # a softmax over the texts with the checkpoint's logit scale
    jobs: int = 1  # processes scanning the history (large ranges only)


@dataclass(frozen=True)
class Match:
    """A time range of one source where consecutive windows matched one text."""

    text: str
    source_id: str
    start: datetime  # UTC: the first matching window's start
    end: datetime  # the last matching window's end
    peak_score: float
    peak_time: datetime  # the start of the best window
    windows: int
    clips: tuple[str, ...] = ()  # clip paths relative to the clips directory, overlapping it


@dataclass(frozen=True)
class SearchReport:
    """Every match, and what was searched."""

    options: SearchOptions
    model_id: str
    windows_scored: int
    seconds: float  # reading and scoring the windows (no model loading)
    matches: tuple[Match, ...]
