"""Stream source against real servers: RTSP and HTTP audio, reboots, silence, secrets, no audio."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from monitor.audio.ringbuffer import RingBuffer
from monitor.audio.stream import StreamSource, secrets_of, url_with_credentials
from monitor.config import StreamSourceConfig
from monitor.errors import ConfigError, SourceError
from tests.support.audio import tone, write_clip
from tests.support.netstreams import (
    FfmpegHttpServer,
    RawHttpServer,
    RtspServer,
    free_port,
    looped,
)
from tests.support.waiting import wait_until

RATE_HZ = 48000
AUDIO_WAIT_SECONDS = 15.0  # first audio: ffmpeg start, RTSP handshake, probing; a loaded box


def stream_config(url: str, **options: object) -> StreamSourceConfig:
    return StreamSourceConfig.model_validate({"type": "stream", "id": "cam", "url": url, **options})


def make_ring() -> RingBuffer:
    return RingBuffer(RATE_HZ * 5, 1, RATE_HZ)


def peak_hz(ring: RingBuffer, seconds: float = 1.0) -> float:
    """The strongest frequency in the newest `seconds` of the ring (1 Hz bins for 1 s)."""
    end = ring.written_frames
    frames = round(seconds * ring.sample_rate_hz)
    samples = ring.read(end - frames, end)
    assert samples is not None
    spectrum = np.abs(np.fft.rfft(samples[:, 0] * np.hanning(frames)))
    return float(np.argmax(spectrum)) * ring.sample_rate_hz / frames


def wait_for_audio(source: StreamSource, ring: RingBuffer, frames: int = RATE_HZ) -> None:
    def flowing() -> bool:
        if source.error is not None:
            raise AssertionError(f"the stream failed: {source.error}")
        return ring.written_frames >= frames

    wait_until(flowing, f"{frames} frames from {source.source_id}", AUDIO_WAIT_SECONDS)


def wait_for_error(source: StreamSource, timeout_seconds: float = AUDIO_WAIT_SECONDS) -> str:
    wait_until(lambda: source.error is not None, "the stream's error", timeout_seconds)
    error = source.error
    assert isinstance(error, SourceError)
    message = str(error)
    assert "\n" not in message
    return message


def stop_quickly(source: StreamSource) -> None:
    started = time.monotonic()
    source.stop()
    assert time.monotonic() - started < 2.0


# -- without a server ---------------------------------------------------------------------


def test_credentials_go_percent_encoded_into_the_netloc_and_the_rest_stays() -> None:
    url = "rtsp://cam.lan:554/Streaming/Channels/101?transportmode=unicast&"
    assert (
        url_with_credentials(url, "ad:min", "p@ss/w:rd%")
        == "rtsp://ad%3Amin:p%40ss%2Fw%3Ard%25@cam.lan:554/Streaming/Channels/101"
        "?transportmode=unicast&"
    )
    assert url_with_credentials(url, "viewer", None) == url.replace("//", "//viewer@", 1)
    assert url_with_credentials(url, None, None) == url


def test_every_spelling_of_the_password_is_a_secret() -> None:
    assert set(secrets_of("rtsp://u:p%40ss@h/", "p@ss")) == {"p@ss", "p%40ss"}
    assert secrets_of("http://h/live", None) == ()


def test_open_does_not_connect_and_reads_the_password_file(tmp_path: Path) -> None:
    password_file = tmp_path / "cam.pass"
    password_file.write_text("secret\n", encoding="utf-8")
    # Nothing listens there: open() succeeds anyway, a camera that is down must not stop
    # the other sources from starting.
    cfg = stream_config(
        f"rtsp://127.0.0.1:{free_port()}/live", username="u", password_file=password_file
    )
    source = StreamSource(cfg)
    fmt = source.open()
    assert (fmt.sample_rate_hz, fmt.channels, fmt.description) == (RATE_HZ, 1, cfg.url)
    assert source.error is None and not source.finished
    assert source.stats().blocks == 0
    source.stop()
    source.stop()


def test_a_missing_password_file_names_the_source(tmp_path: Path) -> None:
    cfg = stream_config("rtsp://cam.lan/live", username="u", password_file=tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"^sources cam: password_file: cannot read .*nope"):
        StreamSource(cfg).open()


def test_start_before_open_is_an_error() -> None:
    with pytest.raises(SourceError, match="start\\(\\) before open\\(\\)"):
        StreamSource(stream_config("rtsp://cam.lan/live")).start(make_ring())


# -- against servers ----------------------------------------------------------------------


@pytest.mark.slow
def test_an_rtsp_camera_tone_arrives_at_1khz(
    rtsp_server: RtspServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="monitor.audio")
    source = StreamSource(stream_config(rtsp_server.url))
    fmt = source.open()
    assert (fmt.sample_rate_hz, fmt.channels) == (RATE_HZ, 1)
    ring = make_ring()
    source.start(ring)
    try:
        wait_for_audio(source, ring)
        assert abs(peak_hz(ring) - 1000.0) <= 10.0
        stats = source.stats()
        assert stats.blocks > 0 and stats.frames == stats.blocks * RATE_HZ // 10
        assert stats.overflows == 0 and stats.last_block_monotonic is not None
    finally:
        stop_quickly(source)
    messages = [record.getMessage() for record in caplog.records]
    assert f"stream cam: connecting to {rtsp_server.url}" in messages
    assert "stream cam: receiving audio (48000 Hz)" in messages
    assert source.error is None


@pytest.mark.slow
def test_an_http_stream_tone_arrives_at_1khz(
    tmp_path: Path, http_stream_factory: Callable[..., FfmpegHttpServer]
) -> None:
    # 48 kHz stereo float: ffmpeg probes a few hundred kB before its first output, which a
    # paced low-rate stream takes seconds to send.
    clip = write_clip(
        tmp_path / "tone.wav",
        2.0,
        RATE_HZ,
        2,
        signal=lambda seconds, rate, channels: tone(seconds, rate_hz=rate, channels=channels),
        subtype="FLOAT",
    )
    server = http_stream_factory(looped(clip))
    source = StreamSource(stream_config(server.url))
    source.open()
    ring = make_ring()
    source.start(ring)
    try:
        wait_for_audio(source, ring)
        assert abs(peak_hz(ring) - 1000.0) <= 10.0
    finally:
        stop_quickly(source)


@pytest.mark.slow
def test_a_camera_reboot_is_an_error_then_the_same_source_reconnects(
    rtsp_server: RtspServer,
) -> None:
    source = StreamSource(stream_config(rtsp_server.url, connect_timeout_seconds=3))
    ring = make_ring()
    source.open()
    source.start(ring)
    try:
        wait_for_audio(source, ring, RATE_HZ // 2)
        rtsp_server.kill()
        message = wait_for_error(source)
        assert message.startswith(f"stream cam ({rtsp_server.url}): ")
        assert "ffmpeg exited with code" in message
        rtsp_server.start()
        # What the supervisor does: stop, reopen, start into the same ring.
        stop_quickly(source)
        source.open()
        before = ring.written_frames
        source.start(ring)
        assert source.error is None
        wait_for_audio(source, ring, before + RATE_HZ)
        assert abs(peak_hz(ring) - 1000.0) <= 10.0
    finally:
        stop_quickly(source)


@pytest.mark.slow
def test_a_connected_stream_that_sends_nothing_trips_the_watchdog(
    silent_http_server: RawHttpServer,
) -> None:
    cfg = stream_config(
        silent_http_server.url, no_data_timeout_seconds=2, connect_timeout_seconds=60
    )
    source = StreamSource(cfg)
    source.open()
    started = time.monotonic()
    source.start(make_ring())
    try:
        message = wait_for_error(source, 10.0)
        elapsed = time.monotonic() - started
        assert 2.0 <= elapsed < 5.0
        assert message.startswith(f"stream cam ({silent_http_server.url}): ")
        assert "no audio for 2 s after starting ffmpeg" in message
    finally:
        stop_quickly(source)


@pytest.mark.slow
def test_a_stream_that_stops_sending_after_audio_trips_the_watchdog(
    rtsp_server: RtspServer,
) -> None:
    # ffmpeg's own socket timeout is longer: the watchdog is what notices.
    cfg = stream_config(rtsp_server.url, no_data_timeout_seconds=1.5, connect_timeout_seconds=60)
    source = StreamSource(cfg)
    source.open()
    ring = make_ring()
    source.start(ring)
    try:
        wait_for_audio(source, ring, RATE_HZ // 2)
        rtsp_server.freeze()
        frozen = time.monotonic()
        message = wait_for_error(source, 10.0)
        assert time.monotonic() - frozen < 4.0
        assert message == f"stream cam ({rtsp_server.url}): connected but no audio for 1.5 s"
    finally:
        stop_quickly(source)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["password_file", "url"])
def test_a_password_never_reaches_the_log_or_the_error(
    where: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "s3cr:t@pw/x"  # needs percent-encoding: every spelling must stay hidden
    encoded = "s3cr%3At%40pw%2Fx"
    port = free_port()  # nothing listens: the connection is refused
    if where == "password_file":
        password_file = tmp_path / "cam.pass"
        password_file.write_text(password + "\n", encoding="utf-8")
        cfg = stream_config(
            f"rtsp://127.0.0.1:{port}/live", username="admin", password_file=password_file
        )
    else:
        cfg = stream_config(f"rtsp://admin:{encoded}@127.0.0.1:{port}/live")
    source = StreamSource(cfg)
    source.open()
    source.start(make_ring())
    try:
        message = wait_for_error(source)
    finally:
        stop_quickly(source)
    assert f"rtsp://admin:***@127.0.0.1:{port}/live" in message
    assert "Connection refused" in message
    texts = [message, *(record.getMessage() for record in caplog.records)]
    assert any("ffmpeg: " in text and "***" in text for text in texts)
    for text in texts:
        for spelling in (password, encoded, "s3cr"):
            assert spelling not in text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("server", "why"),
    [("text", "not an audio or video stream"), ("video-only", "no audio track in the stream")],
)
def test_a_stream_without_audio_is_one_clear_error(
    server: str,
    why: str,
    text_http_server: RawHttpServer,
    http_stream_factory: Callable[..., FfmpegHttpServer],
) -> None:
    if server == "text":
        url = text_http_server.url
    else:
        # A camera with its microphone off. Raw video in nut: ffmpeg's probe sees at once
        # that there is no audio (mpegts at a low bit rate takes it seconds).
        video = ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-an", "-c:v", "rawvideo"]
        url = http_stream_factory(video, "nut").url
    source = StreamSource(stream_config(url))
    source.open()
    source.start(make_ring())
    try:
        message = wait_for_error(source)
    finally:
        stop_quickly(source)
    assert message.startswith(f"stream cam ({url}): ffmpeg exited with code 1, {why}: ")
