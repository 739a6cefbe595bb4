"""The change gate: a window whose newest audio sounds like the last scored one skips the model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitor.config.window import ChangeGateConfig
from monitor.frames import Window

FRAME_SAMPLES = 1024  # 21 ms at 48 kHz
BANDS = 24
MIN_BAND_BINS = 4  # narrower bands are too noisy to compare over one hop
LOW_HZ = 60.0
RELATIVE_FLOOR_DB = 40.0
NYQUIST_SHARE = 0.45  # of the source's rate: where its resampled audio still holds sound
POWER_FLOOR = 1e-12  # -120 dB: digital near-silence compares equal to itself


def band_edges(frame_samples: int, sample_rate_hz: int) -> np.ndarray:
    """Bin indices of roughly log-spaced bands from LOW_HZ to Nyquist, each MIN_BAND_BINS wide
    at least (the low bands of a log scale would hold a single, noisy FFT bin)."""
    bins = frame_samples // 2 + 1
    low = max(1, round(LOW_HZ * frame_samples / sample_rate_hz))
    edges = [low]
    for target in np.geomspace(low, bins, BANDS + 1)[1:]:
        edges.append(max(round(float(target)), edges[-1] + MIN_BAND_BINS))
    out = np.array([e for e in edges if e <= bins], dtype=np.int64)
    if out[-1] != bins:
        out[-1] = bins
    return out


def band_profile_db(
    samples: np.ndarray, sample_rate_hz: int, max_hz: float | None = None
) -> np.ndarray:
    """Mean power per bin of each band (dB) of `samples`, averaged over frames as power, so
    a short loud sound in a quiet hop moves it (0.1 s of a sound 30 dB above the floor in
    a 1 s hop raises its bands by 20 dB)."""
    frame = min(FRAME_SAMPLES, len(samples))
    count = len(samples) // frame
    frames = samples[: count * frame].reshape(count, frame).astype(np.float32, copy=False)
    power = np.square(np.abs(np.fft.rfft(frames, axis=1))).mean(axis=0)
    edges = band_edges(frame, sample_rate_hz)
    if max_hz is not None:
        # A source resampled up to the model's rate has only filter residue above its own
        # Nyquist: those bands' levels are noise, not sound.
        top = int(max_hz * frame / sample_rate_hz)
        edges = edges[edges <= max(top, int(edges[1]))]
    # Per bin, not per band: wide and narrow bands of white noise read the same.
    bands = np.add.reduceat(power[: edges[-1]], edges[:-1])[: len(edges) - 1] / np.diff(edges)
    out: np.ndarray = 10.0 * np.log10(bands / frame + POWER_FLOOR)
    return out


def _band_change_db(profile: np.ndarray, reference: np.ndarray) -> float:
    """The largest change of any band; levels far below the reference's loudest band count
    as that floor, so a near-empty band's fluctuations are not a change."""
    floor = float(reference.max()) - RELATIVE_FLOOR_DB
    return float(np.max(np.abs(np.maximum(profile, floor) - np.maximum(reference, floor))))


@dataclass
class _SourceGate:
    reference_db: np.ndarray | None = None  # the newest hop of the last scored window
    last_end_index: int = 0  # the previous window's end (source rate), scored or not
    last_scored_end_index: int = 0
    hold_until_index: int = 0  # windows starting before this still hold a change


class ChangeGate:
    """Per source, whether a window needs the model (a change in its newest hop, a change
    still inside it, or max_skip_seconds since the last scored one) or may carry the last
    scores. Used only by the worker thread."""

    def __init__(self, cfg: ChangeGateConfig) -> None:
        self.min_change_db = cfg.min_change_db
        self.max_skip_seconds = cfg.max_skip_seconds
        self._sources: dict[str, _SourceGate] = {}

    def forget(self, source_id: str) -> None:
        """Score the next window of `source_id` whatever it holds (its last scores are gone)."""
        self._sources.pop(source_id, None)

    def needs_model(self, window: Window, samples: np.ndarray) -> bool:
        state = self._sources.setdefault(window.source_id, _SourceGate())
        span = max(1, window.end_index - window.start_index)
        source_rate_hz = span / window.duration_seconds
        reference = state.reference_db
        new_frames = (
            span if reference is None else min(span, window.end_index - state.last_end_index)
        )
        new_samples = min(len(samples), max(FRAME_SAMPLES, round(len(samples) * new_frames / span)))
        profile = band_profile_db(
            samples[-new_samples:], window.sample_rate_hz, NYQUIST_SHARE * source_rate_hz
        )
        changed = reference is None or _band_change_db(profile, reference) >= self.min_change_db
        if changed and reference is not None:  # a first window is no change to hold on to
            state.hold_until_index = window.end_index
        stale = (window.end_index - state.last_scored_end_index) / source_rate_hz
        score = (
            changed or window.start_index < state.hold_until_index or stale >= self.max_skip_seconds
        )
        state.last_end_index = window.end_index
        if score:
            state.reference_db = profile
            state.last_scored_end_index = window.end_index
        return score
