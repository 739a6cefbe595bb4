"""ClipRecorder: clips exact to the sample from a real ring, sidecars, truncation, a broken disk."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from monitor.audio.ringbuffer import RingBuffer
from monitor.clips.recorder import ClipRecorder
from monitor.config import ClipsConfig
from tests.support.clips import (
    T0,
    detection,
    end_event,
    fill,
    markers,
    read_clip,
    start_event,
)
from tests.support.waiting import wait_until

RATE = 16000
PCM24_STEP = 2.0**-23  # what 24-bit storage may change a sample by


@pytest.fixture
def recorders() -> Iterator[list[ClipRecorder]]:
    made: list[ClipRecorder] = []
    yield made
    for recorder in made:
        recorder.stop(5.0)


def recorder_for(
    made: list[ClipRecorder], root: Path, rings: dict[str, RingBuffer], **clips: object
) -> ClipRecorder:
    config = ClipsConfig.model_validate({"enabled": True, "format": "wav", **clips})
    recorder = ClipRecorder(config, root, rings)
    recorder.start()
    made.append(recorder)
    return recorder


def test_a_clip_is_exact_to_the_sample_with_its_pre_and_post_roll(
    tmp_path: Path, recorders: list[ClipRecorder]
) -> None:
    ring = RingBuffer(20 * RATE, 2, RATE)
    fill(ring, 0, 10 * RATE)
    recorder = recorder_for(
        recorders, tmp_path, {"yard": ring}, pre_roll_seconds=1.0, post_roll_seconds=0.75
    )
    first = detection("yard", 80_003, 96_003, RATE)  # 5 s + 3 frames: not on a block edge
    peak = detection("yard", 88_003, 104_003, RATE, score=0.95)
    start = start_event(first)
    end = end_event(start, peak, last_window_end_index=112_003)
    assert recorder.annotate([start])[0].clip is None  # the start names no clip
    (ended,) = recorder.annotate([end])
    assert ended.clip == "yard/2026-03-01/120005_pets_dog_barking_0123abcd.wav"
    sidecar = (tmp_path / ended.clip).with_suffix(".json")
    wait_until(sidecar.exists, "the sidecar")

    data, rate_hz, side = read_clip(tmp_path, ended.clip)
    first_index, end_index = 80_003 - RATE, 112_003 + 12_000
    assert rate_hz == RATE and data.shape == (end_index - first_index, 2)
    expected = markers(first_index, end_index - first_index, 2)
    # The first and last samples are the ring's frames at the computed indices, and so is
    # every one between.
    np.testing.assert_allclose(data[0], expected[0], atol=PCM24_STEP)
    np.testing.assert_allclose(data[-1], expected[-1], atol=PCM24_STEP)
    np.testing.assert_allclose(data, expected, atol=PCM24_STEP)
    assert side["clip"] == ended.clip
    assert side["source"] == "yard"
    assert (side["label_set"], side["label"]) == ("pets", "dog barking")
    assert side["event_id"] == start.event_id
    assert side["start_time"] == "2026-03-01T12:00:04.000Z"  # 5 s + 3 frames - 1 s, in ms
    assert side["end_time"] == "2026-03-01T12:00:07.750Z"  # the last sample: 124002 / 16 kHz
    assert (side["first_sample_index"], side["end_sample_index"]) == (first_index, end_index)
    assert side["first_detection"]["score"] == 0.9 and side["peak"]["score"] == 0.95
    assert side["model"] == "tiny" and side["sample_rate_hz"] == RATE and side["channels"] == 2
    assert side["pre_roll_seconds"] == 1.0 and side["pre_roll_truncated"] is False
    assert side["post_roll_seconds"] == 0.75 and side["post_roll_truncated"] is False
    assert side["detections"] == 2 and side["capped"] is False
    assert recorder.stats().written == 1 and recorder.stats().pending == 0


def test_pre_roll_at_the_start_of_a_stream_is_shorter_and_the_sidecar_says_so(
    tmp_path: Path, recorders: list[ClipRecorder]
) -> None:
    ring = RingBuffer(20 * RATE, 1, RATE)
    fill(ring, 0, 5 * RATE)
    recorder = recorder_for(recorders, tmp_path, {"yard": ring}, pre_roll_seconds=3.0)
    first = detection("yard", 8000, 24_000, RATE)  # the first window starts 0.5 s in
    start = start_event(first)
    (ended,) = recorder.annotate([start, end_event(start, first, 24_000)])[1:]
    assert ended.clip is not None
    wait_until((tmp_path / ended.clip).with_suffix(".json").exists, "the sidecar")
    data, _, side = read_clip(tmp_path, ended.clip)
    assert len(data) == 24_000 + 3 * RATE  # from frame 0 to the post-roll
    np.testing.assert_allclose(data[0], markers(0, 1, 1)[0], atol=PCM24_STEP)
    assert side["pre_roll_seconds"] == 0.5 and side["pre_roll_truncated"] is True
    assert side["start_time"] == "2026-03-01T12:00:00.000Z"
    assert side["first_sample_index"] == 0


def test_a_long_event_outlasts_the_ring_and_is_copied_as_it_arrives(
    tmp_path: Path, recorders: list[ClipRecorder]
) -> None:
    """A 2 s ring and a 6 s event: what is held at the start (pre-roll and the detected
    part), then every block as it is written, with no frame lost or repeated."""
    ring = RingBuffer(2 * RATE, 1, RATE)
    block = RATE // 10
    fill(ring, 0, 2 * RATE)
    recorder = recorder_for(
        recorders, tmp_path, {"yard": ring}, pre_roll_seconds=0.5, post_roll_seconds=0.5
    )
    first = detection("yard", RATE, RATE + RATE // 2, RATE)  # 1.0-1.5 s
    start = start_event(first)
    recorder.annotate([start])
    written = 2 * RATE
    while written < 8 * RATE:  # 0.1 s blocks about 5 times faster than real time
        fill(ring, written, block)
        written += block
        time.sleep(0.02)
    (ended,) = recorder.annotate([end_event(start, first, 7 * RATE)])
    assert ended.clip is not None
    wait_until((tmp_path / ended.clip).with_suffix(".json").exists, "the sidecar")
    data, _, side = read_clip(tmp_path, ended.clip)
    first_index = RATE // 2
    end_index = 7 * RATE + RATE // 2
    np.testing.assert_allclose(
        data, markers(first_index, end_index - first_index, 1), atol=PCM24_STEP
    )
    assert side["audio_lost"] is False and side["pre_roll_truncated"] is False


def test_a_clip_is_cut_at_max_clip_seconds(tmp_path: Path, recorders: list[ClipRecorder]) -> None:
    ring = RingBuffer(30 * RATE, 1, RATE)
    fill(ring, 0, 25 * RATE)
    recorder = recorder_for(
        recorders, tmp_path, {"yard": ring}, pre_roll_seconds=1.0, max_clip_seconds=4.0
    )
    first = detection("yard", 2 * RATE, 3 * RATE, RATE)
    start = start_event(first)
    (ended,) = recorder.annotate([start, end_event(start, first, 20 * RATE)])[1:]
    assert ended.clip is not None
    wait_until((tmp_path / ended.clip).with_suffix(".json").exists, "the sidecar")
    data, _, side = read_clip(tmp_path, ended.clip)
    assert len(data) == 4 * RATE and side["capped"] is True
    assert side["post_roll_truncated"] is True


def test_an_event_open_at_shutdown_gets_a_clip_of_what_exists(
    tmp_path: Path, recorders: list[ClipRecorder]
) -> None:
    """The monitor stops: the event's end (from close_all) wants a post-roll that never comes;
    stop() finishes the clip with the audio there is, at once."""
    ring = RingBuffer(10 * RATE, 1, RATE)
    fill(ring, 0, 3 * RATE)
    recorder = recorder_for(recorders, tmp_path, {"yard": ring}, post_roll_seconds=3.0)
    first = detection("yard", RATE, 2 * RATE, RATE)
    start = start_event(first)
    (ended,) = recorder.annotate([start, end_event(start, first, 3 * RATE)])[1:]
    started = time.monotonic()
    assert recorder.stop(3.0)
    assert time.monotonic() - started < 1.0
    assert ended.clip is not None
    data, _, side = read_clip(tmp_path, ended.clip)
    assert len(data) == 3 * RATE  # from frame 0 (pre-roll truncated) to the last written
    assert side["post_roll_seconds"] == 0.0 and side["post_roll_truncated"] is True


def test_an_unwritable_directory_warns_once_and_events_still_flow(
    tmp_path: Path, recorders: list[ClipRecorder], caplog: pytest.LogCaptureFixture
) -> None:
    """A path under a regular file can never be a directory (also as root): every clip
    fails, one warning for the episode, the events come back whole; once writing works
    again, one info line and clips are named again."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    root = blocker / "clips"
    ring = RingBuffer(20 * RATE, 1, RATE)
    fill(ring, 0, 10 * RATE)
    recorder = recorder_for(recorders, root, {"yard": ring}, pre_roll_seconds=0.5)
    caplog.set_level(logging.INFO, logger="monitor.clips.recorder")

    def one_event(n: int) -> list[str | None]:
        first = detection("yard", n * RATE, n * RATE + RATE // 2, RATE)
        start = start_event(first, event_id=f"{n:08d}-0000-4000-8000-000000000000")
        events = recorder.annotate([start, end_event(start, first, n * RATE + RATE)])
        assert [e.event_id for e in events] == [start.event_id] * 2  # nothing held back
        return [e.clip for e in events]

    for n in range(1, 4):
        one_event(n)
        wait_until(lambda n=n: recorder.stats().failed == n, f"clip {n} to fail")  # type: ignore[misc]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot write clips" in warnings[0].getMessage()
    assert recorder.stats().failing and recorder.is_alive()
    assert one_event(4) == [None, None]  # while failing, the end names no clip
    wait_until(lambda: recorder.stats().failed == 4, "clip 4 to fail")

    blocker.unlink()  # the disk is back
    root.mkdir(parents=True)
    one_event(5)
    wait_until(lambda: recorder.stats().written == 1, "a clip once writing works")
    assert not recorder.stats().failing
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert sum("works again" in m for m in infos) == 1
    assert one_event(6)[1] is not None
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_annotate_never_waits_for_the_writer(tmp_path: Path) -> None:
    """Before the writer thread runs at all, annotate still returns at once."""
    ring = RingBuffer(10 * RATE, 1, RATE)
    fill(ring, 0, 5 * RATE)
    recorder = ClipRecorder(ClipsConfig(enabled=True), tmp_path, {"yard": ring})
    first = detection("yard", RATE, 2 * RATE, RATE)
    start = start_event(first)
    done = threading.Event()

    def call() -> None:
        recorder.annotate([start, end_event(start, first, 2 * RATE)])
        done.set()

    threading.Thread(target=call).start()
    assert done.wait(1.0)
    assert recorder.stats().pending == 0  # the name is handed on; the job waits in the queue
    assert recorder.stop(1.0)  # never started: nothing to finish


def test_events_of_unknown_sources_pass_unchanged(tmp_path: Path) -> None:
    recorder = ClipRecorder(ClipsConfig(enabled=True), tmp_path, {})
    first = detection("elsewhere", 0, RATE, RATE)
    start = start_event(first)
    events = [start, end_event(start, first, RATE)]
    assert recorder.annotate(events) == events
    assert first.window_start == T0
