"""The ffmpeg process that decodes a network stream; the only module that runs subprocesses."""

from __future__ import annotations

import collections
import functools
import logging
import shutil
import subprocess
import threading
import time
from typing import IO

from monitor.config import StreamSourceConfig
from monitor.config.secrets import redact_text
from monitor.errors import SourceError

logger = logging.getLogger(__name__)

FFMPEG_MISSING = (
    "ffmpeg not found on PATH: install it (scripts/setup.sh does, or apt-get install ffmpeg)"
)

# ffmpeg stops on SIGTERM within a few hundred ms, even mid-connect (its interrupt callback);
# SIGKILL after this is for one wedged in a driver or a DNS lookup. Source.stop() must return
# within 2 s in all.
TERMINATE_GRACE_SECONDS = 0.5
KILL_WAIT_SECONDS = 0.5
STDERR_JOIN_SECONDS = 0.2
PROBE_TIMEOUT_SECONDS = 10.0
# A camera that is down makes ffmpeg repeat itself at every reconnect: enough lines to see why,
# not a log flooded for hours.
LOG_LINES_PER_PERIOD = 5
LOG_PERIOD_SECONDS = 10.0
LAST_LINES_KEPT = 5
# Warnings ffmpeg prints on every connection to a healthy stream of some kinds (PCM in WAV,
# MP3): logged at DEBUG, and never taken as the reason a stream stopped.
ROUTINE_WARNINGS = (
    "Guessed Channel Layout",
    "Ignoring maximum wav data size",
    "Estimating duration from bitrate",
)


def find_ffmpeg() -> str:
    """The path of the ffmpeg executable; SourceError (one line) when it is not installed."""
    path = shutil.which("ffmpeg")
    if path is None:
        raise SourceError(FFMPEG_MISSING)
    return path


@functools.lru_cache(maxsize=4)
def rtsp_timeout_option(ffmpeg: str) -> str:
    """The RTSP socket-timeout option this ffmpeg takes: `-timeout` from 5.0, `-stimeout` before.

    ffmpeg 4.x reads `-timeout` on RTSP as "listen for an incoming connection": given it, the
    client would wait as a server for a camera that never calls. So ask its help text once.
    """
    try:
        done = subprocess.run(
            [ffmpeg, "-hide_banner", "-h", "demuxer=rtsp"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=PROBE_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as err:
        raise SourceError(f"cannot run {ffmpeg}: {err}") from err
    return rtsp_timeout_in_help(done.stdout)


def rtsp_timeout_in_help(help_text: str) -> str:
    """`-stimeout` when ffmpeg's RTSP help still lists it (4.x), else `-timeout`."""
    return "-stimeout" if "-stimeout " in help_text else "-timeout"


def ffmpeg_command(
    cfg: StreamSourceConfig,
    url_with_credentials: str,
    *,
    ffmpeg: str = "ffmpeg",
    rtsp_timeout: str = "-timeout",
) -> list[str]:
    """The ffmpeg command line that decodes `cfg`'s stream to mono float32 at its rate on stdout.

    No `-reconnect*` options: ffmpeg exits when the stream drops and the supervisor restarts it
    with backoff, the same recovery as every other source.
    """
    timeout_us = str(round(cfg.connect_timeout_seconds * 1_000_000))
    # -nostats: the progress line is \r-terminated noise on stderr at any log level.
    command = [ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "warning"]
    if cfg.is_rtsp:
        command += ["-rtsp_transport", cfg.rtsp_transport, rtsp_timeout, timeout_us]
    else:
        # Every URL protocol (http, tcp, rtmp, srt, file) honours rw_timeout for its reads,
        # so a half-open connection after a server reboot ends instead of hanging.
        command += ["-rw_timeout", timeout_us]
        if cfg.url.lower().startswith("udp:"):
            # rw_timeout does not bound UDP's opening probe; udp's own timeout does.
            command += ["-timeout", timeout_us]
    command += ["-i", url_with_credentials, "-vn", "-sn", "-dn"]
    command += ["-ac", "1", "-ar", str(cfg.sample_rate_hz), "-f", "f32le", "pipe:1"]
    return command


class LogRateLimit:
    """At most `max_lines` lines per `period_seconds`; counts the rest for one summary line."""

    def __init__(
        self, max_lines: int = LOG_LINES_PER_PERIOD, period_seconds: float = LOG_PERIOD_SECONDS
    ) -> None:
        self.max_lines = max_lines
        self.period_seconds = period_seconds
        self._lock = threading.Lock()  # an old process's stderr may still drain as a new starts
        self._period_start: float | None = None
        self._count = 0
        self._suppressed = 0

    def admit(self, now_monotonic: float) -> tuple[bool, int]:
        """Whether a line arriving now may be logged, and how many lines were suppressed in
        the period that has just ended (to report before it)."""
        with self._lock:
            ended = 0
            start = self._period_start
            if start is None or now_monotonic - start >= self.period_seconds:
                ended, self._suppressed = self._suppressed, 0
                self._period_start = now_monotonic
                self._count = 0
            if self._count < self.max_lines:
                self._count += 1
                return True, ended
            self._suppressed += 1
            return False, ended

    def flush(self) -> int:
        """Lines suppressed and not yet reported (when the output ends); resets the count."""
        with self._lock:
            suppressed, self._suppressed = self._suppressed, 0
            return suppressed


class FfmpegProcess:
    """A running ffmpeg: its stdout is the caller's to read; stderr goes to the log, redacted.

    The command holds the URL with its password, so it is never logged; every stderr line
    passes through redact_text with the secrets before it is logged or kept.
    """

    def __init__(
        self,
        command: list[str],
        *,
        name: str,
        secrets: tuple[str, ...] = (),
        rate_limit: LogRateLimit | None = None,
    ) -> None:
        self.name = name
        self._secrets = secrets
        self._rate_limit = rate_limit or LogRateLimit()
        self._last_lines: collections.deque[str] = collections.deque(maxlen=LAST_LINES_KEPT)
        self._lock = threading.Lock()
        self._stopped = False
        try:
            # A session of its own: a Ctrl-C or a signal to our process group reaches only us,
            # and we stop ffmpeg in order.
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as err:  # the message names the executable, never the URL argument
            raise SourceError(f"stream {name}: cannot start ffmpeg: {err.strerror or err}") from err
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self.stdout: IO[bytes] = self._proc.stdout
        self._stderr_thread = threading.Thread(
            target=self._drain_stderr,
            args=(self._proc.stderr,),
            name=f"ffmpeg-log-{name}",
            daemon=True,
        )
        self._stderr_thread.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once ffmpeg has exited (negative: killed by that signal), else None."""
        return self._proc.poll()

    def _drain_stderr(self, stderr: IO[bytes]) -> None:
        # Read every byte, logged or not: ffmpeg blocks once a full stderr pipe is not read.
        try:
            for raw in iter(stderr.readline, b""):
                text = raw.decode("utf-8", errors="replace").replace("\r", "\n")
                for piece in text.splitlines():
                    line = redact_text(piece.strip(), self._secrets)
                    if line:
                        self._log_line(line)
        except (OSError, ValueError):  # the pipe was closed under us at stop
            pass
        finally:
            stderr.close()
            suppressed = self._rate_limit.flush()
            if suppressed:
                logger.warning("stream %s: %d more ffmpeg lines suppressed", self.name, suppressed)

    def _log_line(self, line: str) -> None:
        if any(routine in line for routine in ROUTINE_WARNINGS):
            logger.debug("stream %s: ffmpeg: %s", self.name, line)
            return
        self._last_lines.append(line)
        allowed, suppressed = self._rate_limit.admit(time.monotonic())
        if suppressed:
            logger.warning("stream %s: %d more ffmpeg lines suppressed", self.name, suppressed)
        if allowed:
            logger.warning("stream %s: ffmpeg: %s", self.name, line)

    def last_lines(self) -> tuple[str, ...]:
        """The newest stderr lines, redacted, to explain an exit."""
        return tuple(self._last_lines)

    def wait_exit(self, timeout_seconds: float) -> int | None:
        """Wait for ffmpeg to exit by itself and its stderr to be read; its status or None."""
        try:
            code = self._proc.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            return None
        self._stderr_thread.join(STDERR_JOIN_SECONDS)
        return code

    def stop(self) -> int | None:
        """Terminate, kill if it lingers, and reap; safe to call twice and from any thread."""
        with self._lock:
            if self._stopped:
                return self._proc.returncode
            self._stopped = True
        proc = self._proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=TERMINATE_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    proc.wait(timeout=KILL_WAIT_SECONDS)
                except subprocess.TimeoutExpired:  # in the kernel (D state); reaped later
                    logger.error("stream %s: ffmpeg (pid %d) did not die", self.name, proc.pid)
        self._stderr_thread.join(STDERR_JOIN_SECONDS)
        return proc.returncode

    def close_stdout(self) -> None:
        """Close our end of the audio pipe (by its reader, once it reads no more)."""
        self.stdout.close()
