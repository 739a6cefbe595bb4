"""One window's scores, as the worker hands them to the outputs, made up for a test."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

import numpy as np

from monitor.frames import Scores, Window

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def window_scores(
    source_id: str,
    sets: Mapping[str, Mapping[str, float]],
    *,
    end: datetime = T0,
    amplitude: float = 0.1,
) -> list[Scores]:
    """Scores per label set of one 1 s window of `source_id` ending at `end`: a square wave of
    `amplitude` (its RMS level), or digital silence for 0."""
    samples = np.full(48000, amplitude, np.float32)
    samples[::2] *= -1
    window = Window(source_id, samples, 48000, 0, 48000, end - timedelta(seconds=1), end)
    return [Scores(window, name, dict(scores)) for name, scores in sets.items()]
