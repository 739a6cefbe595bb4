"""File source: paced and unpaced replay into the ring buffer, looping, and clear errors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from monitor.audio.file import FileSource
from monitor.audio.ringbuffer import RingBuffer
from monitor.audio.windowing import Windower
from monitor.config import FileSourceConfig
from monitor.errors import SourceError
from tests.support.audio import noise, write_clip


def run_until_finished(source: FileSource, ring: RingBuffer, timeout_seconds: float) -> None:
    source.start(ring)
    deadline = time.monotonic() + timeout_seconds
    while not source.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    source.stop()
    assert source.finished


@pytest.mark.parametrize(
    ("suffix", "kw", "atol"),
    [
        (".wav", {"subtype": "PCM_16"}, 1e-4),
        (".wav", {"subtype": "FLOAT"}, 0.0),
        (".flac", {}, 1e-4),
        (".ogg", {}, None),
    ],
)
def test_unpaced_replay_delivers_every_frame(
    tmp_path: Path, suffix: str, kw: dict[str, str], atol: float | None
) -> None:
    path = tmp_path / f"clip{suffix}"
    write_clip(path, 3.0, 16000, 2, signal=noise, **kw)
    data = noise(3.0, 16000, 2)
    source = FileSource(FileSourceConfig(type="file", path=path, realtime=False))
    fmt = source.open()
    assert (fmt.sample_rate_hz, fmt.channels) == (16000, 2)
    ring = RingBuffer(16000 * 10, 2, 16000)
    started = time.monotonic()
    run_until_finished(source, ring, 10.0)
    assert time.monotonic() - started < 2.0  # not paced: far faster than 3 s
    assert ring.written_frames == len(data)
    assert source.stats().frames == len(data)
    if atol is not None:  # lossy Vorbis is only checked for length
        out = ring.read(0, len(data))
        assert out is not None
        np.testing.assert_allclose(out, data, atol=atol)


def test_unpaced_replay_waits_for_a_slow_reader(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    write_clip(path, 20.0, 8000, 1, signal=noise)
    source = FileSource(FileSourceConfig(type="file", path=path, realtime=False, buffer_seconds=3))
    source.open()
    ring = RingBuffer(8000 * 3, 1, 8000)
    windower = Windower(ring, "file", window_seconds=2.0, hop_seconds=1.0, catch_up=True)
    source.start(ring)
    ends = []
    while True:
        w = windower.next_window(0.5)
        if w is None:
            if source.finished and windower.next_window(0) is None:
                break
            continue
        ends.append(w.end_index)
        time.sleep(0.005)  # a worker slower than the reader
    source.stop()
    # Every hop of the 20 s file was scored, none lost, though the ring holds only 3 s.
    assert ends == [8000 * s for s in range(2, 21)]
    assert ring.lost_frames == 0


@pytest.mark.slow
def test_paced_replay_runs_in_real_time(tmp_path: Path) -> None:
    path = tmp_path / "clip.wav"
    write_clip(path, 1.0, 8000, 1, signal=noise)
    source = FileSource(FileSourceConfig(type="file", path=path, realtime=True))
    source.open()
    ring = RingBuffer(8000 * 5, 1, 8000)
    started = time.monotonic()
    run_until_finished(source, ring, 10.0)
    elapsed = time.monotonic() - started
    assert 0.8 < elapsed < 5.0
    # Paced: the clock anchor is wall time, so the last frame is "now".
    assert abs(ring.time_of(ring.written_frames) - time.time()) < 1.0


def test_loop_restarts_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "clip.wav"
    write_clip(path, 0.5, 8000, 1, signal=noise)
    source = FileSource(FileSourceConfig(type="file", path=path, realtime=False, loop=True))
    source.open()
    ring = RingBuffer(8000 * 2, 1, 8000)
    source.start(ring)
    deadline = time.monotonic() + 10
    while ring.written_frames < 8000 * 3 and time.monotonic() < deadline:
        ring.release_before(ring.written_frames)
        time.sleep(0.001)
    source.stop()
    assert ring.written_frames >= 8000 * 3
    assert not source.finished or source.error is None


def test_missing_corrupt_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        FileSource(FileSourceConfig(type="file", path=tmp_path / "nope.wav")).open()
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(SourceError, match=r"corrupt\.wav: cannot decode"):
        FileSource(FileSourceConfig(type="file", path=corrupt)).open()
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(SourceError, match="contains no audio"):
        FileSource(FileSourceConfig(type="file", path=empty)).open()
    with pytest.raises(SourceError, match="is a directory"):
        FileSource(FileSourceConfig(type="file", path=tmp_path)).open()
