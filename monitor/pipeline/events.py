"""Turns per-window detections into start/end events per label, so a long sound does not flood."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from monitor.frames import Detection, Event


@dataclass
class _Open:
    event_id: str
    first: Detection
    peak: Detection
    started_stream_seconds: float
    last_hit_stream_seconds: float
    count: int
    last_hit_end_index: int | None  # the last detecting window's end sample, for its clip


class EventTracker:
    """Per (source, label set, label): an event starts at the first detection and ends after
    `cooldown_seconds` of audio without one (and never before `hold_seconds` after its start).

    Time is the audio stream's own time (window end sample / rate), so replaying a file as
    fast as possible gives the same events as hearing it live.
    """

    def __init__(self, cooldown_seconds: float, hold_seconds: float) -> None:
        self.cooldown_seconds = cooldown_seconds
        self.hold_seconds = hold_seconds
        self._open: dict[tuple[str, str, str], _Open] = {}

    @property
    def active(self) -> list[tuple[str, str, str]]:
        """(source, label set, label) whose event is ON: two rooms hearing a dog are two."""
        return list(self._open)

    def update(
        self,
        source_id: str,
        label_set: str,
        labels: tuple[str, ...],
        detections: list[Detection],
        stream_seconds: float,
        now: datetime,
    ) -> list[Event]:
        """Feed one window's detections for one label set; returns the events it caused.

        `stream_seconds` is the window's end in its source's stream time; `now` its end in UTC.
        """
        events: list[Event] = []
        hits = {d.label: d for d in detections}
        for label in labels:
            key = (source_id, label_set, label)
            hit = hits.get(label)
            state = self._open.get(key)
            if hit is not None:
                if state is None:
                    state = _Open(
                        str(uuid.uuid4()),
                        hit,
                        hit,
                        stream_seconds,
                        stream_seconds,
                        1,
                        hit.window_end_index,
                    )
                    self._open[key] = state
                    events.append(Event("start", state.event_id, hit, started_at=hit.window_start))
                else:
                    state.last_hit_stream_seconds = stream_seconds
                    state.last_hit_end_index = hit.window_end_index
                    state.count += 1
                    if hit.score > state.peak.score:
                        state.peak = hit
            elif state is not None:
                quiet = stream_seconds - state.last_hit_stream_seconds
                held = stream_seconds - state.started_stream_seconds
                if quiet >= self.cooldown_seconds and held >= self.hold_seconds:
                    events.append(self._end(key, now))
        return events

    def close_except(self, keep: set[tuple[str, str, str]], now: datetime) -> list[Event]:
        """End every open event whose (source, label set, label) is not in `keep`: its label
        or set is no longer scored, so nothing else would end it."""
        return [self._end(key, now) for key in list(self._open) if key not in keep]

    def close_all(self, now: datetime) -> list[Event]:
        """End every open event (at shutdown, so no state is left stuck ON)."""
        return [self._end(key, now) for key in list(self._open)]

    def _end(self, key: tuple[str, str, str], now: datetime) -> Event:
        state = self._open.pop(key)
        # The end message gets its own id so receivers can de-duplicate start and end apart.
        peak = replace(state.peak, id=str(uuid.uuid4()))
        return Event(
            "end",
            state.event_id,
            peak,
            started_at=state.first.window_start,
            ended_at=now,
            detection_count=state.count,
            last_window_end_index=state.last_hit_end_index,
        )
