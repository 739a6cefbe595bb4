"""A preallocated single-writer audio ring buffer that knows the absolute index of each frame."""

from __future__ import annotations

import threading
import time

import numpy as np


class RingBuffer:
    """Fixed-capacity float32 frames x channels; the writer never blocks and never allocates.

    One writer (the capture callback or the file reader) and one main reader (the worker),
    whose read floor a lossless writer waits for; other readers (the clip recorder) may read
    too. The writer announces the frames it is about to overwrite before its copy and
    publishes progress after it, by assigning plain ints, so readers need no lock: each checks
    after its own copy that the region was not being overwritten meanwhile (a seqlock). When
    the reader lags, the oldest audio is overwritten and counted as lost.
    """

    def __init__(self, capacity_frames: int, channels: int, sample_rate_hz: int) -> None:
        if capacity_frames <= 0 or channels <= 0 or sample_rate_hz <= 0:
            raise ValueError("capacity, channels and sample rate must be positive")
        self.capacity_frames = capacity_frames
        self.channels = channels
        self.sample_rate_hz = sample_rate_hz
        self._data = np.zeros((capacity_frames, channels), dtype=np.float32)
        self._written = 0  # absolute frames written so far; only the writer assigns it
        # One past the frames the writer may be copying in now: set before the copy, so a
        # reader's check sees a region being overwritten even before `_written` moves.
        self._claimed = 0
        # (frame index, wall-clock seconds) of the newest write: ties sample indices to UTC.
        self._anchor: tuple[int, float] | None = None
        self._read_floor = 0  # oldest frame the reader still needs; set by the reader
        self._lost_frames = 0  # frames overwritten before the reader reached them
        self._data_ready = threading.Event()
        self._space_ready = threading.Event()
        self._listeners: tuple[threading.Event, ...] = ()  # set on every write (a reader of many)

    def notify_on_write(self, event: threading.Event) -> None:
        """Also set `event` on every write: one reader can wait for any of several buffers."""
        self._listeners = (*self._listeners, event)

    # -- writer side ---------------------------------------------------------------------

    def write(self, block: np.ndarray, wall_time_end: float | None = None) -> None:
        """Copy `block` (frames x channels, or frames for mono) in; never blocks.

        `wall_time_end` is the UTC time (epoch seconds) at which the block's last frame was
        captured; None means "now".
        """
        frames = block.shape[0]
        if frames == 0:
            return
        if block.ndim == 1:
            block = block.reshape(frames, 1)
        cap = self.capacity_frames
        if frames > cap:  # only the newest `cap` frames can be kept
            block = block[frames - cap :]
        kept = block.shape[0]
        self._claimed = self._written + frames
        start = (self._written + frames - kept) % cap
        first = min(kept, cap - start)
        self._data[start : start + first] = block[:first]
        if first < kept:
            self._data[: kept - first] = block[first:]
        written = self._written + frames
        overrun = written - cap - self._read_floor
        if overrun > 0:
            self._lost_frames += min(overrun, frames)
        self._written = written
        self._anchor = (written, time.time() if wall_time_end is None else wall_time_end)
        self._data_ready.set()
        for listener in self._listeners:
            listener.set()

    def free_frames(self) -> int:
        """Frames the writer can add without overwriting audio the reader still needs."""
        return self.capacity_frames - (self._written - self._read_floor)

    def wait_for_space(self, frames: int, timeout: float) -> bool:
        """For a lossless writer (a file replayed as fast as possible): wait for room."""
        deadline = time.monotonic() + timeout
        while self.free_frames() < frames:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._space_ready.clear()
            if self.free_frames() >= frames:
                break
            self._space_ready.wait(min(remaining, 0.1))
        return True

    # -- reader side ---------------------------------------------------------------------

    @property
    def written_frames(self) -> int:
        """Absolute index one past the newest frame."""
        return self._written

    @property
    def oldest_frame(self) -> int:
        """Absolute index of the oldest frame still held."""
        return max(0, self._written - self.capacity_frames)

    @property
    def lost_frames(self) -> int:
        return self._lost_frames

    def release_before(self, index: int) -> None:
        """The reader no longer needs frames before `index` (lets a lossless writer go on)."""
        if index > self._read_floor:
            self._read_floor = index
            self._space_ready.set()

    def wait_for_data(self, end_index: int, timeout: float) -> bool:
        """Wait until frames up to `end_index` are written; True if they are."""
        deadline = time.monotonic() + timeout
        while self._written < end_index:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._data_ready.clear()
            if self._written >= end_index:
                break
            self._data_ready.wait(remaining)
        return True

    def wake(self) -> None:
        """Release any reader or writer waiting (used at shutdown)."""
        self._data_ready.set()
        self._space_ready.set()
        for listener in self._listeners:
            listener.set()

    def read(self, start_index: int, end_index: int) -> np.ndarray | None:
        """Copy frames [start_index, end_index) out; None if any of them is no longer held."""
        if end_index > self._written or end_index < start_index:
            raise ValueError(f"frames [{start_index}, {end_index}) not written yet")
        n = end_index - start_index
        if n > self.capacity_frames or start_index < self.oldest_frame:
            return None
        out = np.empty((n, self.channels), dtype=np.float32)
        cap = self.capacity_frames
        start = start_index % cap
        first = min(n, cap - start)
        out[:first] = self._data[start : start + first]
        out[first:] = self._data[: n - first]
        # The writer may have lapped us during the copy, or be copying over the region now:
        # the copy is valid only if no frame of it has been or is being overwritten.
        if start_index < self._claimed - cap:
            return None
        return out

    def time_of(self, index: int) -> float:
        """UTC epoch seconds of the frame at absolute `index`, from the newest clock anchor."""
        anchor = self._anchor
        if anchor is None:
            return time.time()
        anchor_index, anchor_time = anchor
        return anchor_time - (anchor_index - index) / self.sample_rate_hz
