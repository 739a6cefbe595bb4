"""A network stream (an RTSP camera, an HTTP audio stream) decoded by ffmpeg into the ring."""

from __future__ import annotations

import logging
import os
import selectors
import threading
import time
from urllib.parse import quote, unquote, urlsplit

import numpy as np

from monitor.audio.ffmpeg import (
    FfmpegProcess,
    LogRateLimit,
    ffmpeg_command,
    find_ffmpeg,
    rtsp_timeout_option,
)
from monitor.audio.ringbuffer import RingBuffer
from monitor.audio.source import Source, SourceStats, StreamFormat
from monitor.config import StreamSourceConfig
from monitor.config.secrets import read_password
from monitor.errors import SourceError

logger = logging.getLogger(__name__)

# How often the reader looks up from the pipe to notice stop(): well inside stop()'s 2 s.
POLL_SECONDS = 0.1
# After ffmpeg closes its output, how long it may take to exit and say why.
EXIT_WAIT_SECONDS = 2.0
READER_JOIN_SECONDS = 0.5
SAMPLE_BYTES = 4  # f32le
# ffmpeg's words for "nothing to decode here", and what they mean to someone configuring a URL.
_NO_AUDIO_HINTS = (
    ("does not contain any stream", "no audio track in the stream"),
    ("Output file is empty", "no audio track in the stream"),
    ("Invalid data found when processing input", "not an audio or video stream"),
)


def url_with_credentials(url: str, username: str | None, password: str | None) -> str:
    """`url` with `username` and `password` percent-encoded into its netloc (for ffmpeg only).

    The rest of the URL is kept byte for byte: re-assembling it with urlunsplit could drop
    an empty query or fragment a camera's path depends on.
    """
    if username is None:
        return url
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo = quote(username, safe="")
    if password is not None:
        userinfo += ":" + quote(password, safe="")
    return f"{scheme}://{userinfo}@{rest}"


def secrets_of(url: str, password: str | None) -> tuple[str, ...]:
    """Every spelling of a password ffmpeg might echo: as given, percent-encoded and decoded."""
    spellings: list[str] = []
    if password:
        spellings += [password, quote(password, safe="")]
    try:
        in_url = urlsplit(url).password
    except ValueError:
        in_url = None
    if in_url:
        spellings += [in_url, unquote(in_url)]
    # Longest first: a password that contains another spelling is replaced whole.
    return tuple(sorted(set(spellings), key=len, reverse=True))


class StreamSource(Source):
    """Runs ffmpeg on the stream's URL and copies its mono float32 output into the ring.

    open() only checks what can be checked offline (ffmpeg, the password file): a camera that
    is down at start-up must not stop the other sources. Connection failures, a dropped
    stream and silence on the wire surface as `error`, which the supervisor answers with
    stop(), open(), start() and backoff.
    """

    def __init__(self, cfg: StreamSourceConfig) -> None:
        self.cfg = cfg
        self.source_id = cfg.id
        self._where = f"stream {cfg.id} ({cfg.redacted_url})"
        self._command: list[str] | None = None  # holds the password: never logged
        self._secrets: tuple[str, ...] = ()
        self._rate_limit = LogRateLimit()  # per stream, across restarts
        self._lock = threading.Lock()  # serialises open/start/stop
        self._process: FfmpegProcess | None = None
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._error: BaseException | None = None
        self._blocks = 0
        self._frames = 0
        self._last_block: float | None = None

    def open(self) -> StreamFormat:
        cfg = self.cfg
        ffmpeg = find_ffmpeg()
        password = None
        if cfg.password_file is not None:
            password = read_password(cfg.password_file, what=f"sources {cfg.id}: password_file")
        url = url_with_credentials(cfg.url, cfg.username, password)
        rtsp_timeout = rtsp_timeout_option(ffmpeg) if cfg.is_rtsp else "-timeout"
        with self._lock:
            self._secrets = secrets_of(url, password)
            self._command = ffmpeg_command(cfg, url, ffmpeg=ffmpeg, rtsp_timeout=rtsp_timeout)
        return StreamFormat(cfg.sample_rate_hz, 1, cfg.redacted_url)

    def start(self, ring: RingBuffer) -> None:
        with self._lock:
            if self._command is None:
                raise SourceError(f"{self._where}: start() before open()")
            if self._thread is not None and self._thread.is_alive():
                raise SourceError(f"{self._where}: start() while running; stop() first")
            if ring.channels != 1 or ring.sample_rate_hz != self.cfg.sample_rate_hz:
                raise ValueError(
                    f"ring buffer is {ring.channels} ch at {ring.sample_rate_hz} Hz, "
                    f"the stream 1 ch at {self.cfg.sample_rate_hz} Hz"
                )
            self._error = None
            # A fresh event per run: a reader of an earlier run that is still winding down
            # stays stopped.
            self._stop_event = threading.Event()
            logger.info("stream %s: connecting to %s", self.source_id, self.cfg.redacted_url)
            process = FfmpegProcess(
                self._command,
                name=self.source_id,
                secrets=self._secrets,
                rate_limit=self._rate_limit,
            )
            self._process = process
            self._thread = threading.Thread(
                target=self._read,
                args=(process, ring, self._stop_event),
                name=f"stream-{self.source_id}",
                daemon=True,
            )
            self._thread.start()

    def _read(self, process: FfmpegProcess, ring: RingBuffer, stop: threading.Event) -> None:
        cfg = self.cfg
        block_frames = max(1, round(cfg.sample_rate_hz * cfg.block_seconds))
        # One preallocated block filled by successive reads: a read may end mid-sample, the
        # rest of that sample comes with the next one.
        buffer = bytearray(block_frames * SAMPLE_BYTES)
        view = memoryview(buffer)
        samples = np.frombuffer(buffer, dtype="<f4")
        filled = 0
        fd = process.stdout.fileno()
        selector = selectors.DefaultSelector()
        selector.register(fd, selectors.EVENT_READ)
        last_data = time.monotonic()
        receiving = False
        try:
            while not stop.is_set():
                silent_seconds = time.monotonic() - last_data
                if silent_seconds >= cfg.no_data_timeout_seconds:
                    if not stop.is_set():
                        self._fail_no_data(process, receiving)
                    return
                timeout = min(POLL_SECONDS, cfg.no_data_timeout_seconds - silent_seconds)
                if not selector.select(timeout):
                    continue
                count = os.readv(fd, [view[filled:]])
                if count == 0:
                    self._fail_exited(process, stop)
                    return
                last_data = time.monotonic()
                if not receiving:
                    receiving = True
                    logger.info(
                        "stream %s: receiving audio (%d Hz)", self.source_id, cfg.sample_rate_hz
                    )
                filled += count
                if filled == len(buffer):
                    ring.write(samples)  # copies; wall time = now
                    filled = 0
                    self._blocks += 1
                    self._frames += block_frames
                    self._last_block = time.monotonic()
        except Exception as err:  # a failed ring write or pipe read must reach the supervisor
            if not stop.is_set():
                self._error = SourceError(f"{self._where}: reading ffmpeg's output failed: {err}")
        finally:
            selector.close()
            process.stop()
            process.close_stdout()
            ring.wake()

    def _fail_no_data(self, process: FfmpegProcess, receiving: bool) -> None:
        seconds = f"{self.cfg.no_data_timeout_seconds:g}"
        if receiving:
            message = f"{self._where}: connected but no audio for {seconds} s"
        else:
            message = f"{self._where}: no audio for {seconds} s after starting ffmpeg"
        process.stop()
        last = process.last_lines()
        self._error = SourceError(f"{message}: {last[-1]}" if last else message)

    def _fail_exited(self, process: FfmpegProcess, stop: threading.Event) -> None:
        code = process.wait_exit(EXIT_WAIT_SECONDS)
        if stop.is_set():  # our own stop() ended it
            return
        if code is None:
            process.stop()
            message = f"{self._where}: ffmpeg closed its output but did not exit"
        elif code == 0:
            message = f"{self._where}: the stream ended (ffmpeg exited with code 0)"
        elif code < 0:
            message = f"{self._where}: ffmpeg was killed by signal {-code}"
        else:
            message = f"{self._where}: ffmpeg exited with code {code}"
        last = process.last_lines()
        for needle, hint in _NO_AUDIO_HINTS:
            if any(needle in line for line in last):
                message += f", {hint}"
                break
        self._error = SourceError(f"{message}: {last[-1]}" if last else message)

    def stop(self) -> None:
        with self._lock:
            self._stop_event.set()
            process, self._process = self._process, None
            thread, self._thread = self._thread, None
        if process is not None:
            process.stop()
        if thread is not None and thread is not threading.current_thread():
            thread.join(READER_JOIN_SECONDS)
            if thread.is_alive():
                logger.warning("stream %s: reader thread still running after stop", self.source_id)

    @property
    def finished(self) -> bool:
        return False  # a live stream never runs out

    @property
    def error(self) -> BaseException | None:
        return self._error

    def stats(self) -> SourceStats:
        return SourceStats(
            blocks=self._blocks,
            frames=self._frames,
            overflows=0,
            last_block_monotonic=self._last_block,
        )
