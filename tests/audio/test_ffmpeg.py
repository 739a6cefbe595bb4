"""The ffmpeg boundary: command lines per scheme, stderr drained redacted and rate limited, stop."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import pytest

from monitor.audio.ffmpeg import (
    FFMPEG_MISSING,
    FfmpegProcess,
    LogRateLimit,
    ffmpeg_command,
    find_ffmpeg,
    rtsp_timeout_in_help,
)
from monitor.config import StreamSourceConfig
from monitor.errors import EXIT_UNAVAILABLE, SourceError
from tests.support.netstreams import free_port, require_ffmpeg
from tests.support.waiting import wait_until

TAIL = ["-vn", "-sn", "-dn", "-ac", "1", "-ar", "16000", "-f", "f32le", "pipe:1"]


def stream_config(url: str, **options: object) -> StreamSourceConfig:
    return StreamSourceConfig.model_validate({"type": "stream", "id": "cam", "url": url, **options})


def test_rtsp_gets_its_transport_and_socket_timeout_and_no_reconnect() -> None:
    cfg = stream_config(
        "rtsp://cam.lan:554/stream1",
        rtsp_transport="udp",
        connect_timeout_seconds=2.5,
        sample_rate_hz=16000,
    )
    url = "rtsp://admin:pw@cam.lan:554/stream1"
    command = ffmpeg_command(cfg, url, ffmpeg="/usr/bin/ffmpeg")
    assert command[:6] == [
        "/usr/bin/ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-nostats",
        "-loglevel",
        "warning",
    ]
    assert command[6:10] == ["-rtsp_transport", "udp", "-timeout", "2500000"]
    assert command[10:12] == ["-i", url]
    assert command[12:] == TAIL
    assert not any(arg.startswith("-reconnect") or arg == "-rw_timeout" for arg in command)


def test_rtsps_is_rtsp_and_an_old_ffmpeg_gets_stimeout() -> None:
    cfg = stream_config("rtsps://cam.lan/live", connect_timeout_seconds=10)
    command = ffmpeg_command(cfg, cfg.url, rtsp_timeout="-stimeout")
    assert command[6:10] == ["-rtsp_transport", "tcp", "-stimeout", "10000000"]


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("http://radio.lan:8000/live", ["-rw_timeout", "4000000"]),
        ("https://radio.example/live.mp3", ["-rw_timeout", "4000000"]),
        ("rtmp://host/app/key", ["-rw_timeout", "4000000"]),
        ("srt://host:9000", ["-rw_timeout", "4000000"]),
        ("tcp://host:9000", ["-rw_timeout", "4000000"]),
        # rw_timeout alone does not end UDP's opening probe.
        ("udp://239.0.0.1:5004", ["-rw_timeout", "4000000", "-timeout", "4000000"]),
    ],
)
def test_other_schemes_get_an_io_timeout_and_no_reconnect(url: str, options: list[str]) -> None:
    cfg = stream_config(url, connect_timeout_seconds=4, sample_rate_hz=16000)
    command = ffmpeg_command(cfg, url)
    assert command[6:-12] == options
    assert command[-12:] == ["-i", url, *TAIL]
    assert "-rtsp_transport" not in command
    assert not any(arg.startswith("-reconnect") for arg in command)


def test_the_rtsp_timeout_option_follows_the_ffmpeg_version() -> None:
    ffmpeg_4 = (
        "  -timeout           <int>        .D......... set maximum timeout (in seconds) to wait "
        "for incoming connections (-1 is infinite, imply flag listen)\n"
        "  -stimeout          <int>        .D......... set timeout (in microseconds) of socket "
        "TCP I/O operations\n"
    )
    ffmpeg_5 = (
        "  -timeout           <int64>      .D......... set timeout (in microseconds) of socket "
        "I/O operations\n"
    )
    assert rtsp_timeout_in_help(ffmpeg_4) == "-stimeout"
    assert rtsp_timeout_in_help(ffmpeg_5) == "-timeout"


def test_missing_ffmpeg_is_a_one_line_source_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SourceError) as raised:
        find_ffmpeg()
    assert str(raised.value) == FFMPEG_MISSING
    assert "\n" not in str(raised.value)
    assert raised.value.exit_code == EXIT_UNAVAILABLE


def test_find_ffmpeg_finds_the_installed_one() -> None:
    assert find_ffmpeg() == require_ffmpeg()


def test_the_rate_limit_lets_five_lines_a_period_through_then_counts() -> None:
    limit = LogRateLimit(max_lines=5, period_seconds=10.0)
    admitted = [limit.admit(100.0 + i * 0.1) for i in range(8)]
    assert admitted == [(True, 0)] * 5 + [(False, 0)] * 3
    # The next period's first line reports what the last one held back.
    assert limit.admit(110.5) == (True, 3)
    assert limit.admit(110.6) == (True, 0)
    assert limit.flush() == 0


def test_stderr_lines_are_redacted_when_logged_and_kept(caplog: pytest.LogCaptureFixture) -> None:
    ffmpeg = require_ffmpeg()
    caplog.set_level(logging.DEBUG)
    # The password in the URL's user info, and one that only the secrets know (in the path).
    url = f"http://user:p%40ss@127.0.0.1:{free_port()}/hunter2"
    cfg = stream_config("http://127.0.0.1/")
    process = FfmpegProcess(
        ffmpeg_command(cfg, url, ffmpeg=ffmpeg), name="cam", secrets=("hunter2", "p%40ss")
    )
    assert process.wait_exit(10.0) not in (None, 0)
    process.stop()
    process.close_stdout()
    lines = process.last_lines()
    assert lines, "ffmpeg said why it failed"
    assert "http://user:***@127.0.0.1" in lines[-1]
    assert "Connection refused" in lines[-1]
    logged = [record.getMessage() for record in caplog.records]
    assert any("ffmpeg: " in message and "***" in message for message in logged)
    for text in [*lines, *logged]:
        assert "p%40ss" not in text and "p@ss" not in text and "hunter2" not in text


def test_a_flood_on_stderr_is_drained_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    # Any process shows the plumbing: 200 kB of stderr (three pipe buffers) must not stall it.
    flood = "import sys\nfor i in range(4000): sys.stderr.write(f'warning {i:045d}\\n')\n"
    caplog.set_level(logging.WARNING, logger="monitor.audio.ffmpeg")
    process = FfmpegProcess([sys.executable, "-c", flood], name="noisy")
    assert process.wait_exit(20.0) == 0
    process.stop()
    process.close_stdout()
    messages = [r.getMessage() for r in caplog.records if r.name == "monitor.audio.ffmpeg"]
    assert len([m for m in messages if "ffmpeg: warning" in m]) == 5
    assert "stream noisy: 3995 more ffmpeg lines suppressed" in messages
    assert process.last_lines()[-1] == f"warning {3999:045d}"


def test_stop_ends_a_running_ffmpeg_quickly_and_reaps_it() -> None:
    ffmpeg = require_ffmpeg()
    live = ["-re", "-f", "lavfi", "-i", "sine=frequency=1000", "-f", "f32le", "pipe:1"]
    process = FfmpegProcess([ffmpeg, "-nostdin", "-loglevel", "warning", *live], name="tone")
    wait_until(lambda: len(os.read(process.stdout.fileno(), 4096)) > 0, "ffmpeg's first bytes")
    started = time.monotonic()
    code = process.stop()
    assert time.monotonic() - started < 2.0
    assert code is not None
    assert process.stop() == code  # a second stop is a no-op
    process.close_stdout()
    with pytest.raises(ChildProcessError):  # already reaped: no zombie left
        os.waitpid(process.pid, os.WNOHANG)


def test_routine_warnings_are_debug_and_never_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    script = (
        "import sys\n"
        "sys.stderr.write('real trouble\\n')\n"
        "sys.stderr.write('Guessed Channel Layout for Input Stream #0.0 : mono\\n')\n"
    )
    caplog.set_level(logging.DEBUG, logger="monitor.audio.ffmpeg")
    process = FfmpegProcess([sys.executable, "-c", script], name="pcm")
    assert process.wait_exit(20.0) == 0
    process.stop()
    process.close_stdout()
    assert process.last_lines() == ("real trouble",)
    levels = {r.getMessage(): r.levelno for r in caplog.records}
    assert levels["stream pcm: ffmpeg: real trouble"] == logging.WARNING
    assert levels["stream pcm: ffmpeg: Guessed Channel Layout for Input Stream #0.0 : mono"] == (
        logging.DEBUG
    )
