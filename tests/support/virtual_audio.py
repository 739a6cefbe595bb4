"""Capture devices without a sound card: a PulseAudio null sink and an ALSA `file` PCM."""

from __future__ import annotations

import contextlib
import ctypes.util
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.support.audio import tone

ALLOW_SKIP_ENV = "AUDIO_MONITOR_ALLOW_SKIP"
SINK_NAME = "fake"
SINK_RATE_HZ = 48000
PULSE_DEVICE = "pulse"  # the ALSA PCM (from libasound2-plugins) that PortAudio lists
FILE_DEVICE = "filein"
# Past the end of its infile the ALSA file plugin re-delivers its last buffer's stale contents
# (seen here: the final 1600 frames, over and over), not silence; zeros after the samples
# make that stale buffer silent. 65536 frames outlast any ALSA buffer PortAudio picks.
FILE_PADDING_FRAMES = 65536
READY_TIMEOUT_SECONDS = 20.0

_ALSA_PLUGIN_DIRS = ("/usr/lib/*/alsa-lib", "/usr/lib/alsa-lib", "/usr/lib64/alsa-lib")


def _missing(reason: str) -> None:
    """CI installs the system tools, so a missing one fails, unless AUDIO_MONITOR_ALLOW_SKIP=1."""
    if os.environ.get(ALLOW_SKIP_ENV) == "1":
        pytest.skip(reason)
    pytest.fail(f"{reason} (set {ALLOW_SKIP_ENV}=1 to skip instead)", pytrace=False)


def _require_portaudio() -> None:
    if ctypes.util.find_library("portaudio") is None:
        _missing("PortAudio library not found: apt-get install libportaudio2")


def _require_tools(*tools: str) -> None:
    absent = [tool for tool in tools if shutil.which(tool) is None]
    if absent:
        _missing(f"missing {', '.join(absent)}: apt-get install pulseaudio pulseaudio-utils")


def require_alsa_plugin(kind: str) -> None:
    name = f"libasound_module_pcm_{kind}.so"
    if not any(glob.glob(os.path.join(d, name)) for d in _ALSA_PLUGIN_DIRS):
        _missing(f"ALSA {kind} plugin ({name}) not found: apt-get install libasound2-plugins")


def write_tone_wav(
    path: Path,
    frequency_hz: float,
    seconds: float,
    sample_rate_hz: int = SINK_RATE_HZ,
    amplitude: float = 0.5,
) -> Path:
    """Write a mono 16-bit sine WAV (what the virtual microphone will hear) and return it."""
    samples = tone(seconds, frequency_hz, rate_hz=sample_rate_hz, amplitude=amplitude)
    soundfile.write(str(path), samples, sample_rate_hz, subtype="PCM_16")
    return path


@contextlib.contextmanager
def environment_in_process(overrides: dict[str, str]) -> Iterator[None]:
    """Apply env overrides to this process and re-scan PortAudio; undo both afterwards.

    PortAudio enumerates ALSA devices and reads ~/.asoundrc only in Pa_Initialize, which
    sounddevice runs at import, maybe long before (any earlier test that touched
    monitor.audio.microphone). Setting HOME etc. is therefore not enough: `refresh_devices()`
    (sd._terminate() + sd._initialize(), the re-scan the sounddevice maintainers recommend in
    spatialaudio/python-sounddevice#125) makes PortAudio see the new config. It also closes
    every open PortAudio stream of the process: stop sources before leaving the block.
    """
    from monitor.audio.microphone import refresh_devices

    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        refresh_devices()
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        refresh_devices()


def _stop_process(proc: subprocess.Popen[bytes], timeout_seconds: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_seconds)


@dataclass
class PulseNullSink:
    """A private PulseAudio daemon whose null sink's monitor is the capture device.

    - `env`: the full environment for a child process (os.environ + `env_overrides`).
    - `device`: the value for the microphone source's `device` ("pulse"; "default" works too).
    - `play(wav)`: plays a file into the sink (paplay -d fake); the capture hears it in real time.
    - `stop_server()`: kills the daemon, as if the microphone were unplugged.
    """

    root: Path
    home: Path
    runtime_dir: Path
    log_path: Path
    env_overrides: dict[str, str]
    device: str = PULSE_DEVICE
    sink: str = SINK_NAME
    source: str = f"{SINK_NAME}.monitor"
    sample_rate_hz: int = SINK_RATE_HZ
    players: list[subprocess.Popen[bytes]] = field(default_factory=list)
    daemon: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **self.env_overrides}

    def play(self, wav_path: Path) -> subprocess.Popen[bytes]:
        """Start `paplay` on the sink; the fixture stops it at teardown if still running."""
        proc = subprocess.Popen(
            ["paplay", "-d", self.sink, str(wav_path)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.players.append(proc)
        return proc

    def stop_server(self) -> None:
        """Stop the PulseAudio daemon now: to every client the capture device disappears."""
        if self.daemon is not None:
            _stop_process(self.daemon)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _wait_until_ready(daemon: subprocess.Popen[bytes], sink: PulseNullSink) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            pytest.fail(f"pulseaudio exited with {daemon.returncode}:\n{sink.log_text()}")
        probe = subprocess.run(
            ["pactl", "list", "short", "sources"],
            env=sink.env,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if probe.returncode == 0 and sink.source in probe.stdout:
            return
        time.sleep(0.05)
    pytest.fail(f"pulseaudio not ready after {READY_TIMEOUT_SECONDS} s:\n{sink.log_text()}")


def _start_ticker(sink: PulseNullSink) -> subprocess.Popen[bytes]:
    """Attach a 20-ms recorder to the sink's monitor and wait until it receives audio.

    Idle, the null sink renders in 2-s blocks, so a capture stream would wait up to ~2 s for
    its first block; a low-latency client that stays attached keeps it ticking in 20-ms steps
    (a new capture gets its first block within ~50 ms). The tiny format keeps the recording
    that proves it (in a file) small.
    """
    heard = sink.root / "ticker.u8"
    with heard.open("wb") as out:
        ticker = subprocess.Popen(
            [
                "parec",
                "-d",
                sink.source,
                "--latency-msec=20",
                "--format=u8",
                "--rate=8000",
                "--channels=1",
            ],
            env=sink.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
    # The sink adopts a new latency only when its current block ends; suspending and resuming
    # restarts its clock at once (else the first block takes up to 2 s).
    for suspend in ("1", "0"):
        subprocess.run(
            ["pactl", "suspend-sink", sink.sink, suspend],
            env=sink.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            timeout=10,
        )
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while heard.stat().st_size == 0:
        if ticker.poll() is not None or time.monotonic() > deadline:
            _stop_process(ticker)
            pytest.fail(f"the null sink delivers no audio to parec:\n{sink.log_text()}")
        time.sleep(0.02)
    return ticker


@pytest.fixture
def pulse_null_sink() -> Iterator[PulseNullSink]:
    """A private PulseAudio daemon (null sink `fake` at 48 kHz) for subprocess tests.

    Run the child (e.g. `audio-monitor run`) with `env=pulse_null_sink.env` and a microphone
    source with `device: pulse` (what `pulse_null_sink.device` holds); `device: default` or
    no `device` at all work too, since with that env ALSA's default PCM is PulseAudio. The
    child hears whatever `pulse_null_sink.play(wav)` plays, paced in real time.

    The daemon runs as a child of pytest, not daemonised, with its own HOME and
    XDG_RUNTIME_DIR, so it neither needs nor touches a user session; as root it only warns.
    $HOME/.asoundrc routes ALSA's default PCM to PulseAudio, PULSE_SOURCE selects the sink's
    monitor, PULSE_SERVER names the socket so no client autospawns or looks elsewhere.
    To capture inside the pytest process use `pulse_in_process` instead.
    """
    _require_portaudio()
    _require_tools("pulseaudio", "pactl", "paplay", "parec")
    require_alsa_plugin("pulse")
    # Short path: the daemon's unix socket path must stay under ~108 bytes.
    root = Path(tempfile.mkdtemp(prefix="am-pulse-"))
    home, runtime_dir = root / "home", root / "run"
    (home / ".config" / "pulse").mkdir(parents=True)
    runtime_dir.mkdir(mode=0o700)
    (home / ".asoundrc").write_text("pcm.!default { type pulse }\nctl.!default { type pulse }\n")
    client_conf = home / ".config" / "pulse" / "client.conf"
    client_conf.write_text("autospawn = no\n")
    sink = PulseNullSink(
        root=root,
        home=home,
        runtime_dir=runtime_dir,
        log_path=root / "pulseaudio.log",
        env_overrides={
            "HOME": str(home),
            "XDG_RUNTIME_DIR": str(runtime_dir),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "PULSE_SERVER": f"unix:{runtime_dir / 'pulse' / 'native'}",
            "PULSE_CLIENTCONFIG": str(client_conf),
            "PULSE_SOURCE": f"{SINK_NAME}.monitor",
            "PULSE_SINK": SINK_NAME,
        },
    )
    daemon_env = {k: v for k, v in sink.env.items() if k != "PULSE_SERVER"}
    daemon = subprocess.Popen(
        [
            "pulseaudio",
            "-n",  # no default.pa: only the modules below
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--realtime=no",
            "--high-priority=no",
            "--use-pid-file=no",
            "-L",
            "module-native-protocol-unix",
            "-L",
            f"module-null-sink sink_name={SINK_NAME} rate={SINK_RATE_HZ}",
            f"--log-target=file:{sink.log_path}",
        ],
        env=daemon_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sink.daemon = daemon
    ticker: subprocess.Popen[bytes] | None = None
    try:
        _wait_until_ready(daemon, sink)
        ticker = _start_ticker(sink)
        yield sink
    finally:
        if ticker is not None:
            _stop_process(ticker)
        for player in sink.players:
            _stop_process(player)
            if player.stderr is not None:
                player.stderr.close()
        _stop_process(daemon)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pulse_in_process(pulse_null_sink: PulseNullSink) -> Iterator[PulseNullSink]:
    """`pulse_null_sink`, with its environment applied to this process and PortAudio re-scanned.

    Open a MicrophoneSource with `device=pulse_in_process.device`; stop it before the test
    ends (the re-scan at teardown closes any stream still open).
    """
    with environment_in_process(pulse_null_sink.env_overrides):
        yield pulse_null_sink


@dataclass(frozen=True)
class AlsaFileDevice:
    """An ALSA `file` PCM that captures the frames of `raw_path`, then silence, unpaced."""

    device: str
    raw_path: Path
    home: Path
    frames: int
    channels: int
    env_overrides: dict[str, str]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **self.env_overrides}


@pytest.fixture
def alsa_file_device(tmp_path: Path) -> Iterator[Callable[[np.ndarray], AlsaFileDevice]]:
    """Factory: `make(samples)` -> an ALSA device `filein` that delivers `samples`, then zeros.

    `samples` is (frames,) or (frames, channels); it is written as raw little-endian float32
    because MicrophoneSource opens float32 streams: PortAudio asks ALSA for FLOAT_LE, the
    `null` slave accepts any format, and the file plugin hands the bytes over unchanged.
    Any rate is accepted (configure `sample_rate_hz`; the device's default is 44100).
    The `null` slave has no clock: blocks arrive as fast as the callback returns, so a ring
    buffer nobody reads overflows within milliseconds. After the samples come zeros, for good
    (see FILE_PADDING_FRAMES).
    Each call applies its HOME in-process and re-scans PortAudio (`.env` serves a child).
    """
    _require_portaudio()
    stack = contextlib.ExitStack()
    counter = 0

    def make(samples: np.ndarray) -> AlsaFileDevice:
        nonlocal counter
        counter += 1
        home = tmp_path / f"alsa-file-{counter}"
        home.mkdir()
        frames = np.asarray(samples, dtype="<f4")
        frames = frames.reshape(len(frames), -1)
        raw_path = home / "input.f32le.raw"
        padding = np.zeros((FILE_PADDING_FRAMES, frames.shape[1]), dtype="<f4")
        np.concatenate([frames, padding]).tofile(raw_path)
        (home / ".asoundrc").write_text(
            f"pcm.{FILE_DEVICE} {{\n"
            "    type file\n"
            '    slave.pcm "null"\n'
            '    file "/dev/null"\n'
            f'    infile "{raw_path}"\n'
            '    format "raw"\n'
            "}\n"
        )
        device = AlsaFileDevice(
            device=FILE_DEVICE,
            raw_path=raw_path,
            home=home,
            frames=frames.shape[0],
            channels=frames.shape[1],
            env_overrides={"HOME": str(home)},
        )
        stack.enter_context(environment_in_process(device.env_overrides))
        return device

    with stack:
        yield make
