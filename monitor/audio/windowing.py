"""Cuts hop-spaced windows from the ring buffer and turns them into mono 48 kHz audio."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import numpy as np

from monitor.audio.resample import MODEL_SAMPLE_RATE_HZ, StreamResampler, stream_position
from monitor.audio.ringbuffer import RingBuffer
from monitor.frames import Window

logger = logging.getLogger(__name__)


def to_mono(frames: np.ndarray) -> np.ndarray:
    """Average the channels of (frames, channels) audio; mono input is returned as is."""
    if frames.ndim == 1:
        return frames.astype(np.float32, copy=False)
    if frames.shape[1] == 1:
        return frames[:, 0].astype(np.float32, copy=False)
    mono: np.ndarray = frames.mean(axis=1, dtype=np.float32)
    return mono


def _utc(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc)


class Windower:
    """Produces the next window to score from a ring buffer, every `hop_seconds` of audio.

    Live sources (`catch_up=False`): when the worker falls behind, the windows it missed are
    skipped and counted, so the newest window is always the one scored next. Lossless sources
    (`catch_up=True`, a file replayed as fast as possible) get every window in order: the
    ring buffer's writer waits for the reader instead.
    """

    def __init__(
        self,
        ring: RingBuffer,
        source_id: str,
        window_seconds: float,
        hop_seconds: float,
        *,
        catch_up: bool = False,
        target_rate_hz: int = MODEL_SAMPLE_RATE_HZ,
    ) -> None:
        self.ring = ring
        self.source_id = source_id
        self.rate_hz = ring.sample_rate_hz
        self.target_rate_hz = target_rate_hz
        # Overlapping windows share their interior samples: each is resampled once.
        self._resampler = StreamResampler(self.rate_hz, target_rate_hz)
        self.window_frames = max(1, round(window_seconds * self.rate_hz))
        self.hop_frames = max(1, round(hop_seconds * self.rate_hz))
        self.catch_up = catch_up
        self._next_end = self.window_frames
        self._last_end = 0  # end of the newest window handed out
        self.windows = 0
        self.skipped_windows = 0

    def next_window(self, timeout_seconds: float) -> Window | None:
        """The next full window, or None if its audio has not arrived within the timeout."""
        if not self.ring.wait_for_data(self._next_end, timeout_seconds):
            return None
        written = self.ring.written_frames
        if not self.catch_up and written - self._next_end >= self.hop_frames:
            behind = (written - self._next_end) // self.hop_frames
            self._next_end += behind * self.hop_frames
            self.skipped_windows += behind
        end = self._next_end
        start = end - self.window_frames
        window = self._cut(start, end)
        if window is None:
            # The writer lapped us while we waited: jump to the newest complete window.
            behind = max(1, (self.ring.written_frames - end) // self.hop_frames)
            self._next_end = end + behind * self.hop_frames
            self.skipped_windows += behind
            return None
        self._next_end = end + self.hop_frames
        return window

    def final_window(self) -> Window | None:
        """At the end of a finite source: a last window covering audio not yet scored."""
        written = self.ring.written_frames
        if written <= self._last_end or written == 0:
            return None
        if self._last_end > 0 and written - self._last_end < self.hop_frames // 2:
            return None  # less than half a hop of new audio: the last window covered it
        start = max(0, written - self.window_frames, self.ring.oldest_frame)
        return self._cut(start, written)

    def _cut(self, start: int, end: int) -> Window | None:
        frames = self.ring.read(start, end)
        if frames is None:
            return None
        self.ring.release_before(end - self.window_frames + self.hop_frames)
        samples = self._resampler(to_mono(frames), start)
        self._last_end = end
        self.windows += 1
        return Window(
            source_id=self.source_id,
            samples=samples,
            sample_rate_hz=self.target_rate_hz,
            start_index=start,
            end_index=end,
            start_time=_utc(self.ring.time_of(start)),
            end_time=_utc(self.ring.time_of(end)),
            model_start_index=stream_position(start, self.rate_hz, self.target_rate_hz),
        )
