"""Network stream servers on loopback for the stream source: RTSP, HTTP by ffmpeg, a silent one.

Fixtures (loaded for every test through ``pytest_plugins`` in tests/conftest.py):

``rtsp_server -> RtspServer``
    GStreamer's RTSP server sending a live 1 kHz tone at ``.url``; ``kill()`` it as a camera
    reboots, ``start()`` it again on the same port, ``freeze()`` it as a camera that hangs.
``http_stream_factory(input_args, output_format="wav") -> FfmpegHttpServer``
    ``ffmpeg -re INPUT_ARGS -f FORMAT -listen 1`` at ``.url``, paced in real time: a clip
    ``looped(clip)`` forever, or e.g. a video-only lavfi source.
``silent_http_server -> RawHttpServer``
    Answers 200 audio/wav and then sends nothing (a wedged encoder), for the watchdog.
``text_http_server -> RawHttpServer``
    Answers 200 text/plain with a page of text: a URL that is not a stream.

A missing ffmpeg or GStreamer RTSP server fails the test, or skips it when
AUDIO_MONITOR_ALLOW_SKIP=1 (scripts/setup.sh --dev installs both).
"""

from __future__ import annotations

import contextlib
import functools
import os
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"
SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).with_name("rtsp_server.py")
READY_TIMEOUT_SECONDS = 15.0
ALLOW_SKIP_ENV = "AUDIO_MONITOR_ALLOW_SKIP"
_TCP_LISTEN = "0A"  # the socket state LISTEN in /proc/net/tcp


def _missing(reason: str) -> None:
    """CI installs the system packages, so a missing one fails, unless ALLOW_SKIP=1."""
    if os.environ.get(ALLOW_SKIP_ENV) == "1":
        pytest.skip(reason)
    pytest.fail(f"{reason} (set {ALLOW_SKIP_ENV}=1 to skip instead)", pytrace=False)


def require_ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        _missing("ffmpeg not found: apt-get install ffmpeg")
    assert path is not None
    return path


@functools.lru_cache(maxsize=1)
def _gst_rtsp_problem() -> str | None:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found (the RTSP server needs Debian's python3-gi)"
    probe = (
        "import gi; gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import GstRtspServer"
    )
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        return (
            "GStreamer's RTSP server is not importable from /usr/bin/python3: apt-get install "
            "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-base "
            "python3-gi"
        )
    return None


def require_gst_rtsp() -> None:
    problem = _gst_rtsp_problem()
    if problem is not None:
        _missing(problem)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def is_listening(port: int) -> bool:
    """Whether a TCP socket listens on `port`, without connecting (ffmpeg -listen 1 serves
    only its first client: a probe connection would use it up)."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[1].endswith(wanted) and fields[3] == _TCP_LISTEN:
                    return True
    return False


def _wait(condition: Callable[[], bool], what: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not condition():
        if process.poll() is not None:
            raise RuntimeError(f"{what}: the server exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {READY_TIMEOUT_SECONDS} s")
        time.sleep(0.02)


def _end(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.kill()
    process.wait(timeout=5)


class RtspServer:
    """rtsp_server.py under the system Python; start() after kill() reuses the port."""

    def __init__(self, frequency_hz: float = 1000.0) -> None:
        require_gst_rtsp()
        self.frequency_hz = frequency_hz
        self.port = 0  # chosen by the first start(); kept for every restart
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://{LOOPBACK}:{self.port}/live"

    def start(self) -> None:
        if self.port == 0:
            self.port = free_port()
        self._process = subprocess.Popen(
            [SYSTEM_PYTHON, str(RTSP_SCRIPT), str(self.port), f"{self.frequency_hz:g}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        line = self._read_line(self._process)
        if line != "ready":
            _end(self._process)
            raise RuntimeError(f"RTSP server on port {self.port} did not start: {line!r}")

    @staticmethod
    def _read_line(process: subprocess.Popen[bytes]) -> str:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(READY_TIMEOUT_SECONDS):
                return f"(nothing within {READY_TIMEOUT_SECONDS} s)"
        return process.stdout.readline().decode(errors="replace").strip()

    def freeze(self) -> None:
        """SIGSTOP: the connection stays open and nothing more comes, a wedged camera."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL: the camera vanishes mid-stream, as when it reboots."""
        process, self._process = self._process, None
        _end(process)
        if process is not None and process.stdout is not None:
            process.stdout.close()


class FfmpegHttpServer:
    """`ffmpeg -listen 1`: one client at a time, paced in real time, then it exits."""

    def __init__(self, input_args: list[str], output_format: str) -> None:
        self.ffmpeg = require_ffmpeg()
        self.input_args = input_args
        self.output_format = output_format
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}/live"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [self.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-re"]
        command += [*self.input_args, "-f", self.output_format, "-listen", "1", self.url]
        # Its complaints when a client hangs up ("Broken pipe") are expected: not shown.
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait(lambda: is_listening(self.port), f"ffmpeg serving {self.url}", self._process)

    def kill(self) -> None:
        process, self._process = self._process, None
        _end(process)


class RawHttpServer:
    """A socket thread answering every request with `header` and then `body`, or with the
    header alone and silence while the connection stays open (`body` None)."""

    def __init__(self, content_type: str, body: bytes | None) -> None:
        length = "" if body is None else f"Content-Length: {len(body)}\r\n"
        self.header = f"HTTP/1.0 200 OK\r\nContent-Type: {content_type}\r\n{length}\r\n".encode()
        self.body = body
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://{LOOPBACK}:{self.port}/live.wav"
        self._stop = threading.Event()
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, name="raw-http", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._connections.append(connection)
            with contextlib.suppress(OSError):
                connection.settimeout(5.0)
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = connection.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                connection.sendall(self.header)
                if self.body is not None:
                    connection.sendall(self.body)
                    connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        for connection in self._connections:
            connection.close()


@pytest.fixture
def rtsp_server() -> Iterator[RtspServer]:
    server = RtspServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def http_stream_factory() -> Iterator[Callable[[list[str], str], FfmpegHttpServer]]:
    servers: list[FfmpegHttpServer] = []

    def make(input_args: list[str], output_format: str = "wav") -> FfmpegHttpServer:
        server = FfmpegHttpServer(input_args, output_format)
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.kill()


def looped(clip: Path) -> list[str]:
    """ffmpeg input arguments that play `clip` over and over: a stream that does not end."""
    return ["-stream_loop", "-1", "-i", str(clip)]


@pytest.fixture
def silent_http_server() -> Iterator[RawHttpServer]:
    server = RawHttpServer("audio/wav", None)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def text_http_server() -> Iterator[RawHttpServer]:
    server = RawHttpServer("text/plain", b"This is not audio.\n" * 200)
    try:
        yield server
    finally:
        server.close()
