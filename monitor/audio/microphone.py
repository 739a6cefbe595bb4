"""Live capture from a PortAudio input device; the only module that imports sounddevice."""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from monitor.audio.ringbuffer import RingBuffer
from monitor.audio.source import Source, SourceStats, StreamFormat
from monitor.config import MicrophoneSourceConfig
from monitor.errors import SourceError

logger = logging.getLogger(__name__)

# PortAudio's close can block for good on a wedged driver (a USB device pulled mid-read);
# shutdown must not hang with it.
STOP_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class InputDevice:
    """A PortAudio device that can capture, as listed by `list_input_devices`."""

    index: int
    name: str
    host_api: str
    max_input_channels: int
    default_sample_rate_hz: float
    is_default: bool


def _sounddevice() -> Any:
    """Import sounddevice, turning a missing or broken PortAudio into a SourceError."""
    try:
        import sounddevice
    except OSError as err:  # the Linux wheel does not bundle the PortAudio library
        raise SourceError(
            f"cannot load the PortAudio library ({err}); install it, e.g. "
            "`apt install libportaudio2`"
        ) from err
    except Exception as err:  # sounddevice runs Pa_Initialize at import; PortAudioError
        raise SourceError(f"cannot initialise PortAudio: {_one_line(err)}") from err
    return sounddevice


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def refresh_devices() -> None:
    """Re-initialise PortAudio so it enumerates the devices (and ALSA config) anew.

    PortAudio lists devices once, at initialisation (sounddevice does that at import), so a
    microphone plugged in later, or a changed ~/.asoundrc, stays invisible until this runs.
    It closes every open stream of the process: call it only while no source is running.
    """
    sd = _sounddevice()
    try:
        # A failed earlier re-initialisation leaves PortAudio terminated.
        if sd._initialized > 0:
            sd._terminate()
        sd._initialize()
    except sd.PortAudioError as err:
        raise SourceError(f"cannot re-initialise PortAudio: {_one_line(err)}") from err


def list_input_devices() -> list[InputDevice]:
    """All devices with at least one input channel, in PortAudio index order."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        host_apis = sd.query_hostapis()
        default_index = sd.default.device[0]
    except sd.PortAudioError as err:
        raise SourceError(f"cannot list audio devices: {_one_line(err)}") from err
    return [
        InputDevice(
            index=int(info["index"]),
            name=str(info["name"]),
            host_api=str(host_apis[info["hostapi"]]["name"]),
            max_input_channels=int(info["max_input_channels"]),
            default_sample_rate_hz=float(info["default_samplerate"]),
            is_default=info["index"] == default_index,
        )
        for info in devices
        if info["max_input_channels"] > 0
    ]


def _describe(devices: list[InputDevice]) -> str:
    if not devices:
        return "none (no capture device found)"
    return ", ".join(f"{d.index}: {d.name!r}" for d in devices)


def resolve_device(spec: int | str | None) -> InputDevice:
    """The input device `spec` names: None = the default, an index, or part of a name."""
    devices = list_input_devices()
    if spec is None:
        for device in devices:
            if device.is_default:
                return device
        raise SourceError(f"no default input device; available: {_describe(devices)}")
    if isinstance(spec, int) and not isinstance(spec, bool):
        for device in devices:
            if device.index == spec:
                return device
        sd = _sounddevice()
        try:
            total = len(sd.query_devices())
        except sd.PortAudioError:
            total = 0
        why = "has no input channels" if 0 <= spec < total else "does not exist"
        raise SourceError(f"audio device {spec} {why}; input devices: {_describe(devices)}")
    wanted = str(spec).casefold()
    exact = [d for d in devices if d.name.casefold() == wanted]
    if len(exact) == 1:
        return exact[0]
    matches = exact or [d for d in devices if wanted in d.name.casefold()]
    if not matches:
        raise SourceError(f"no input device matches {spec!r}; available: {_describe(devices)}")
    if len(matches) > 1:
        raise SourceError(
            f"{spec!r} is ambiguous: it matches {_describe(matches)}; "
            "give more of the name or the device index"
        )
    return matches[0]


def format_devices_table(devices: list[InputDevice]) -> str:
    """A plain-text table of input devices for the `devices` command; '*' marks the default."""
    if not devices:
        return "no input devices found"
    header = ("index", "", "name", "host API", "inputs", "default rate")
    rows = [
        (
            str(d.index),
            "*" if d.is_default else "",
            d.name,
            d.host_api,
            str(d.max_input_channels),
            f"{d.default_sample_rate_hz:g} Hz",
        )
        for d in devices
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {0, 4, 5}  # numbers line up on the right
    lines = [
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


class MicrophoneSource(Source):
    """Captures float32 blocks from an input device in PortAudio's callback thread."""

    def __init__(self, cfg: MicrophoneSourceConfig) -> None:
        self.source_id = cfg.id
        self._cfg = cfg
        self._stream: Any = None
        self._format: StreamFormat | None = None
        self._ring: RingBuffer | None = None
        self._callback_abort: type[Exception] = Exception
        self._lock = threading.Lock()  # serialises open/start/stop, never taken by callbacks
        self._stopping = False
        self._generation = 0  # which stream a late finished-callback belongs to
        self._error: BaseException | None = None
        self._blocks = 0
        self._frames = 0
        self._overflows = 0
        self._last_block_monotonic: float | None = None

    def open(self) -> StreamFormat:
        with self._lock:
            if self._stream is not None and self._format is not None:
                return self._format
            sd = _sounddevice()
            if self._generation > 0:
                # Reopening after a failure: a re-plugged device may have a new index.
                refresh_devices()
            cfg = self._cfg
            device = resolve_device(cfg.device)
            rate = cfg.sample_rate_hz or round(device.default_sample_rate_hz)
            where = f"input device {device.index} {device.name!r} at {rate} Hz"
            if cfg.channels > device.max_input_channels:
                raise SourceError(
                    f"{where}: {cfg.channels} channels configured but the device has "
                    f"{device.max_input_channels}"
                )
            generation = self._generation + 1
            try:
                sd.check_input_settings(
                    device=device.index, samplerate=rate, channels=cfg.channels, dtype="float32"
                )
                stream = sd.InputStream(
                    device=device.index,
                    samplerate=rate,
                    channels=cfg.channels,
                    dtype="float32",
                    blocksize=max(1, round(rate * cfg.block_seconds)),
                    callback=self._callback,
                    finished_callback=functools.partial(self._on_finished, generation),
                )
            except (sd.PortAudioError, ValueError) as err:
                raise SourceError(
                    f"cannot capture {cfg.channels} channel(s) from {where}: {_one_line(err)}"
                ) from err
            self._callback_abort = sd.CallbackAbort
            self._stream = stream
            self._generation = generation
            self._stopping = False
            self._error = None
            self._format = StreamFormat(
                sample_rate_hz=rate,
                channels=cfg.channels,
                description=f"{device.name} ({device.host_api}, device {device.index})",
            )
            logger.info(
                "opened %s: %d Hz, %d channel(s), %d-frame blocks",
                self._format.description,
                rate,
                cfg.channels,
                stream.blocksize,
            )
            return self._format

    def start(self, ring: RingBuffer) -> None:
        with self._lock:
            stream, fmt = self._stream, self._format
            if stream is None or fmt is None:
                raise SourceError(f"source {self.source_id!r}: start() before open()")
            if ring.channels != fmt.channels or ring.sample_rate_hz != fmt.sample_rate_hz:
                raise ValueError(
                    f"ring buffer is {ring.channels} ch at {ring.sample_rate_hz} Hz, "
                    f"the stream {fmt.channels} ch at {fmt.sample_rate_hz} Hz"
                )
            self._ring = ring
            sd = _sounddevice()
            try:
                stream.start()
            except sd.PortAudioError as err:
                raise SourceError(
                    f"cannot start capture from {fmt.description}: {_one_line(err)}"
                ) from err

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio's real-time thread: no logging, no locks, no big allocations.
        ring = self._ring
        if ring is None:
            return
        try:
            # The callback runs right after the block's last frame arrived; the input latency
            # (tens of ms) that this ignores is far below a window's length.
            ring.write(indata, time.time())
        except Exception as err:
            self._error = SourceError(
                f"capture callback of {self.source_id!r} failed: {_one_line(err)}"
            )
            raise self._callback_abort from err
        self._blocks += 1
        self._frames += frames
        if status and status.input_overflow:
            self._overflows += 1
        self._last_block_monotonic = time.monotonic()

    def _on_finished(self, generation: int) -> None:
        # PortAudio calls this when the stream goes inactive; unasked, that means the device
        # or its driver gave up (e.g. a USB microphone unplugged).
        if generation == self._generation and not self._stopping and self._error is None:
            desc = self._format.description if self._format else self.source_id
            self._error = SourceError(f"capture stream of {desc} stopped unexpectedly")

    def stop(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
            if stream is None:
                return
            self._stopping = True
        desc = self._format.description if self._format else self.source_id
        closer = threading.Thread(
            target=self._close_stream, args=(stream, desc), name="capture-close", daemon=True
        )
        closer.start()
        closer.join(STOP_TIMEOUT_SECONDS)
        if closer.is_alive():
            logger.error(
                "closing %s did not finish within %.0f s; left to a background thread",
                desc,
                STOP_TIMEOUT_SECONDS,
            )
        else:
            logger.info("closed %s", desc)

    @staticmethod
    def _close_stream(stream: Any, desc: str) -> None:
        # abort, not stop: stop waits for queued buffers, which a dead device never delivers.
        for action in ("abort", "close"):
            try:
                getattr(stream, action)(ignore_errors=False)
            except Exception as err:
                logger.warning("%s of %s failed: %s", action, desc, _one_line(err))

    @property
    def finished(self) -> bool:
        return False  # a live device never runs out

    @property
    def error(self) -> BaseException | None:
        return self._error

    def stats(self) -> SourceStats:
        return SourceStats(
            blocks=self._blocks,
            frames=self._frames,
            overflows=self._overflows,
            last_block_monotonic=self._last_block_monotonic,
        )
