"""Synthetic events at known sample indices, marker audio in a ring, and clips read back."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from monitor.audio.ringbuffer import RingBuffer
from monitor.frames import Detection, Event

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)  # UTC of frame 0 in these tests
MARKER_PERIOD = 4096


def markers(start: int, n: int, channels: int) -> np.ndarray:
    """(n, channels) float32 whose value names its absolute frame index (mod 4096): any
    sample of a clip says exactly which frame of the stream it is. Channel c is negated
    for odd c, so swapped channels show too."""
    index = np.arange(start, start + n, dtype=np.int64) % MARKER_PERIOD
    mono = (index / MARKER_PERIOD - 0.5).astype(np.float32)
    signs = np.where(np.arange(channels) % 2 == 0, 1.0, -1.0).astype(np.float32)
    return mono[:, None] * signs[None, :]


def fill(ring: RingBuffer, start: int, n: int) -> None:
    """Write frames [start, start + n) of the marker signal into the ring."""
    ring.write(markers(start, n, ring.channels))


def detection(
    source_id: str, start_index: int, end_index: int, rate_hz: int, score: float = 0.9
) -> Detection:
    """A detection of `dog barking` in set `pets` for the window [start_index, end_index)."""
    return Detection(
        id=f"d-{start_index}",
        source_id=source_id,
        label_set="pets",
        label="dog barking",
        score=score,
        threshold=0.5,
        scores={"dog barking": score, "cat": 1 - score},
        window_start=T0 + timedelta(seconds=start_index / rate_hz),
        window_end=T0 + timedelta(seconds=end_index / rate_hz),
        model_id="tiny",
        window_start_index=start_index,
        window_end_index=end_index,
    )


def start_event(first: Detection, event_id: str = "0123abcd-0000-4000-8000-000000000000") -> Event:
    return Event("start", event_id, first, started_at=first.window_start)


def end_event(start: Event, peak: Detection, last_window_end_index: int, count: int = 2) -> Event:
    return Event(
        "end",
        start.event_id,
        peak,
        started_at=start.started_at,
        ended_at=peak.window_end,
        detection_count=count,
        last_window_end_index=last_window_end_index,
    )


def read_clip(root: Path, clip: str) -> tuple[np.ndarray, int, dict[str, Any]]:
    """A clip's (frames, channels) float32 samples, its rate and its sidecar."""
    data, rate_hz = sf.read(root / clip, dtype="float32", always_2d=True)
    side = json.loads((root / clip).with_suffix(".json").read_text(encoding="utf-8"))
    return data, int(rate_hz), side
