"""Ring buffer: absolute indices, wrap-around, loss accounting and the seqlock read check."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from monitor.audio.ringbuffer import RingBuffer


def ramp(start: int, n: int, channels: int = 1) -> np.ndarray:
    values = np.arange(start, start + n, dtype=np.float32)
    return np.repeat(values[:, None], channels, axis=1)


def test_reads_back_by_absolute_index_across_wraps() -> None:
    ring = RingBuffer(100, 2, 1000)
    written = 0
    for n in (30, 45, 60, 7, 99):
        ring.write(ramp(written, n, 2))
        written += n
        ring.release_before(written)
    assert ring.written_frames == written == 241
    assert ring.oldest_frame == 141
    out = ring.read(150, 241)
    assert out is not None
    np.testing.assert_array_equal(out[:, 0], np.arange(150, 241, dtype=np.float32))
    np.testing.assert_array_equal(out[:, 1], out[:, 0])


def test_overwritten_region_reads_as_none_and_counts_loss() -> None:
    ring = RingBuffer(100, 1, 1000)
    ring.write(ramp(0, 80))
    assert ring.lost_frames == 0
    ring.write(ramp(80, 50))  # the reader (floor 0) lags: frames 0..29 overwritten
    assert ring.lost_frames == 30
    assert ring.read(0, 50) is None
    out = ring.read(30, 130)
    assert out is not None and out[0, 0] == 30


def test_released_frames_are_not_counted_as_lost() -> None:
    ring = RingBuffer(100, 1, 1000)
    ring.write(ramp(0, 80))
    ring.release_before(60)
    ring.write(ramp(80, 90))
    assert ring.lost_frames == 10  # only 60..69 were still needed and got overwritten


def test_block_larger_than_capacity_keeps_newest() -> None:
    ring = RingBuffer(10, 1, 1000)
    ring.write(ramp(0, 25))
    assert ring.written_frames == 25
    out = ring.read(15, 25)
    assert out is not None
    np.testing.assert_array_equal(out[:, 0], np.arange(15, 25, dtype=np.float32))


def test_mono_1d_block_and_unwritten_read() -> None:
    ring = RingBuffer(10, 1, 1000)
    ring.write(np.ones(4, dtype=np.float32))
    with pytest.raises(ValueError, match="not written"):
        ring.read(0, 5)


def test_time_of_follows_sample_index() -> None:
    ring = RingBuffer(48000, 1, 48000)
    ring.write(np.zeros((4800, 1), np.float32), wall_time_end=1000.0)
    assert ring.time_of(4800) == 1000.0
    assert ring.time_of(0) == pytest.approx(999.9)
    ring.write(np.zeros((4800, 1), np.float32), wall_time_end=1000.1005)
    # The newest anchor wins, so clock drift of a device never accumulates.
    assert ring.time_of(4800) == pytest.approx(1000.0005)


def test_waits_wake_up_on_write_and_space() -> None:
    ring = RingBuffer(100, 1, 1000)
    assert not ring.wait_for_data(10, timeout=0.05)
    threading.Timer(0.05, lambda: ring.write(ramp(0, 20))).start()
    assert ring.wait_for_data(10, timeout=5.0)
    ring.write(ramp(20, 80))
    assert ring.free_frames() == 0
    assert not ring.wait_for_space(10, timeout=0.05)
    threading.Timer(0.05, lambda: ring.release_before(50)).start()
    assert ring.wait_for_space(10, timeout=5.0)


def test_concurrent_writer_never_yields_torn_windows() -> None:
    ring = RingBuffer(4800, 1, 48000)
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            ring.write(ramp(n, 480))
            n += 480

    thread = threading.Thread(target=writer)
    thread.start()
    checked = 0
    try:
        while checked < 200:
            end = ring.written_frames
            if end < 2400:
                continue
            out = ring.read(end - 2400, end)
            if out is None:
                continue
            # A valid read is exactly the ramp: no half-overwritten samples.
            np.testing.assert_array_equal(out[:, 0], np.arange(end - 2400, end, dtype=np.float32))
            checked += 1
    finally:
        stop.set()
        thread.join()


def test_a_second_reader_at_the_oldest_frames_never_gets_overwritten_audio() -> None:
    """The clip recorder reads old audio (pre-roll) while the writer laps it: a read of
    frames the writer is overwriting right now must come back None, never half-new."""
    ring = RingBuffer(4800, 1, 48000)
    stop = threading.Event()
    block = 1024  # not a divisor of the capacity: overwrites straddle every read's start

    def writer() -> None:
        n = 0
        while not stop.is_set():
            ring.write(ramp(n, block) % 65536)
            n += block

    # Switch threads as often as possible, so the writer lands between any two steps of a read.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=writer)
    thread.start()
    checked = 0
    try:
        while checked < 2000:
            start = ring.oldest_frame
            end = min(start + 2400, ring.written_frames)
            if end - start < 2400:
                continue
            out = ring.read(start, end)
            if out is None:
                continue
            expected = np.arange(start, end, dtype=np.int64) % 65536
            np.testing.assert_array_equal(out[:, 0], expected.astype(np.float32))
            checked += 1
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
