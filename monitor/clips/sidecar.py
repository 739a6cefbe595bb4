"""The JSON sidecar of a clip: what was detected, where the clip lies in time, what is missing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from monitor.frames import Detection, Event

# Rounded so that float noise never says a pre-roll of 3 s is "truncated" to 2.9999999.
_SECONDS_DIGITS = 6


@dataclass(frozen=True)
class ClipFacts:
    """One finished clip: the events it belongs to and which frames of its source it holds."""

    clip: str  # relative to the clips directory
    start: Event
    end: Event | None  # None: the monitor stopped before the event ended
    first_index: int  # absolute frame index (source rate) of the clip's first sample
    frames: int
    sample_rate_hz: int
    channels: int
    format: str
    pre_roll_seconds: float  # as configured
    post_roll_seconds: float
    capped: bool  # cut at clips.max_clip_seconds
    gap: bool  # audio was overwritten before it was copied: the clip stops there


def iso_utc(moment: datetime) -> str:
    """ISO-8601 in UTC with millisecond precision and a 'Z' suffix, as in the MQTT payloads."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(frames: int, rate_hz: int) -> float:
    return round(frames / rate_hz, _SECONDS_DIGITS)


def _detection(d: Detection) -> dict[str, Any]:
    return {
        "score": round(d.score, 6),
        "window_start": iso_utc(d.window_start),
        "window_end": iso_utc(d.window_end),
    }


def clip_start_time(facts: ClipFacts) -> datetime:
    """UTC of the clip's first sample, from the first detecting window's time and index."""
    d = facts.start.detection
    assert d.window_start_index is not None
    offset = (d.window_start_index - facts.first_index) / facts.sample_rate_hz
    return d.window_start - timedelta(seconds=offset)


def sidecar(facts: ClipFacts) -> dict[str, Any]:
    """The sidecar's JSON object. `clip`, `source`, `start_time` and `end_time` are what
    history search reads: keep those names."""
    first = facts.start.detection
    rate = facts.sample_rate_hz
    assert first.window_start_index is not None
    start_time = clip_start_time(facts)
    end_index = facts.first_index + facts.frames
    pre_roll = _seconds(first.window_start_index - facts.first_index, rate)
    body: dict[str, Any] = {
        "clip": facts.clip,
        "source": first.source_id,
        "label_set": first.label_set,
        "label": first.label,
        "event_id": facts.start.event_id,
        "start_time": iso_utc(start_time),
        # The last sample's time, not one past it.
        "end_time": iso_utc(start_time + timedelta(seconds=max(0, facts.frames - 1) / rate)),
        "duration_seconds": _seconds(facts.frames, rate),
        "event_started_at": iso_utc(facts.start.started_at),
        "event_ended_at": None,
        "threshold": first.threshold,
        "first_detection": _detection(first),
        "peak": None,
        "detections": None,
        "model": first.model_id,
        "sample_rate_hz": rate,
        "channels": facts.channels,
        "format": facts.format,
        "first_sample_index": facts.first_index,
        "end_sample_index": end_index,
        "pre_roll_seconds": max(0.0, pre_roll),
        "pre_roll_truncated": pre_roll < round(facts.pre_roll_seconds, _SECONDS_DIGITS),
        "post_roll_seconds": None,
        "post_roll_truncated": None,
        "capped": facts.capped,
        "audio_lost": facts.gap,
    }
    end = facts.end
    if end is not None:
        last_end = end.last_window_end_index
        body["event_ended_at"] = iso_utc(end.ended_at) if end.ended_at is not None else None
        body["peak"] = _detection(end.detection)
        body["detections"] = end.detection_count
        if last_end is not None:
            post_roll = _seconds(end_index - last_end, rate)
            body["post_roll_seconds"] = max(0.0, post_roll)
            body["post_roll_truncated"] = post_roll < round(
                facts.post_roll_seconds, _SECONDS_DIGITS
            )
    return body
