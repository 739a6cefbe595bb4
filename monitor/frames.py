"""Small immutable data objects passed between the pipeline stages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

StreamPosition = tuple[str, int]
"""(stream key, first sample at the model's rate): where a window lies in which stream."""

Position = int | StreamPosition | None
"""A window's place for feature reuse: an index in the one default stream, a keyed stream
position, or None (the window stands alone)."""


@dataclass(frozen=True)
class Window:
    """A mono 48 kHz chunk of audio cut from the ring buffer, with its position in the stream."""

    source_id: str
    samples: np.ndarray = field(repr=False)  # float32, mono, at sample_rate_hz
    sample_rate_hz: int
    start_index: int  # absolute sample index (source rate) of the first sample
    end_index: int  # absolute sample index (source rate) one past the last sample
    start_time: datetime  # UTC, derived from the sample index and the stream's clock anchor
    end_time: datetime
    # Index of the first sample in the stream at sample_rate_hz (the model's rate), when the
    # window starts on a whole sample of that rate; None otherwise. Windows of one stream
    # with positions can share the feature frames they overlap (model.features.StreamingMel).
    model_start_index: int | None = None

    @property
    def duration_seconds(self) -> float:
        return len(self.samples) / self.sample_rate_hz

    @property
    def position(self) -> StreamPosition | None:
        """Where the model may reuse this window's frames: keyed by its source."""
        if self.model_start_index is None:
            return None
        return (self.source_id, self.model_start_index)


def top_labels(scores: Mapping[str, float], k: int) -> list[tuple[str, float]]:
    """The k best (label, score) pairs, best first; ties keep the set's label order."""
    return sorted(scores.items(), key=lambda item: -item[1])[:k]


@dataclass(frozen=True)
class Scores:
    """The scores of one window against one label set (label -> score, in config order)."""

    window: Window
    label_set: str
    scores: dict[str, float]

    def top(self, k: int) -> list[tuple[str, float]]:
        return top_labels(self.scores, k)


@dataclass(frozen=True)
class Detection:
    """A label whose score reached its threshold in one window."""

    id: str
    source_id: str
    label_set: str
    label: str
    score: float
    threshold: float
    scores: dict[str, float]
    window_start: datetime
    window_end: datetime
    model_id: str
    # The window's absolute sample indices at its source's rate (Window.start_index and
    # end_index): where a clip of the event is cut from the ring buffer. None when unknown.
    window_start_index: int | None = None
    window_end_index: int | None = None


@dataclass(frozen=True)
class Event:
    """The start or end of a sound event for one label; what the publisher sends."""

    kind: str  # "start" or "end"
    event_id: str
    detection: Detection  # the first detection (start) or the strongest one (end)
    started_at: datetime
    ended_at: datetime | None = None
    detection_count: int = 1
    # End only: the end (absolute sample index, source rate) of the last detecting window.
    last_window_end_index: int | None = None
    # The event's clip, relative to clips.directory, once the clip recorder has named it.
    clip: str | None = None


@dataclass(frozen=True)
class WindowEmbedding:
    """One scored window's audio embedding and level: what history keeps of it."""

    source_id: str
    start_time: datetime  # UTC, from the window's sample index
    end_time: datetime
    level_dbfs: float  # RMS of the samples the model saw
    embedding: np.ndarray = field(repr=False)  # (dim,) float32, L2-normalised


@dataclass(frozen=True)
class LabelSetView:
    """One label set as it is being listened for now (after live changes)."""

    name: str
    enabled: bool  # scored now (its profile, or enable/disable commands)
    thresholds: tuple[tuple[str, float], ...]  # (label, threshold), in set order


@dataclass(frozen=True)
class ControlResult:
    """The answer to one control command (or a config reload): accepted or refused, why."""

    command: str  # "add_label", ..., "reload"; "" when the payload named none
    ok: bool
    detail: str  # one line: what changed, or what is wrong
    request_id: str | None  # the command's own "id", echoed
    time: datetime  # UTC
    profile: str | None  # the active profile after the command
    label_sets: tuple[LabelSetView, ...]  # every set after the command, in config order
