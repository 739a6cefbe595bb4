"""MicrophoneSource and device lookup through the real sounddevice -> PortAudio -> ALSA path."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from monitor.audio.microphone import (
    STOP_TIMEOUT_SECONDS,
    InputDevice,
    MicrophoneSource,
    format_devices_table,
    list_input_devices,
    resolve_device,
)
from monitor.audio.ringbuffer import RingBuffer
from monitor.config import MicrophoneSourceConfig
from monitor.errors import SourceError
from tests.support.processes import run_python
from tests.support.virtual_audio import (
    FILE_PADDING_FRAMES,
    AlsaFileDevice,
    PulseNullSink,
    environment_in_process,
    require_alsa_plugin,
    write_tone_wav,
)
from tests.support.waiting import WAIT_SECONDS, wait_until

TONE_HZ = 1000.0
BLOCK_SECONDS = 0.05


def _mic(**fields: object) -> MicrophoneSourceConfig:
    return MicrophoneSourceConfig.model_validate(
        {"type": "microphone", "block_seconds": BLOCK_SECONDS, **fields}
    )


def _rms_of_newest(ring: RingBuffer, frames: int) -> float:
    end = ring.written_frames
    if end < frames:
        return 0.0
    block = ring.read(end - frames, end)
    return 0.0 if block is None else float(np.sqrt(np.mean(np.square(block))))


def _peak_hz(samples: np.ndarray, sample_rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * sample_rate_hz / len(samples))


@pytest.fixture
def running() -> Iterator[list[MicrophoneSource]]:
    """Sources registered here are stopped even when an assertion fails."""
    sources: list[MicrophoneSource] = []
    yield sources
    for source in sources:
        source.stop()


# -- device listing and lookup --------------------------------------------------------------


def test_lists_the_pulse_devices_with_default_marked(pulse_in_process: PulseNullSink) -> None:
    devices = list_input_devices()

    names = [d.name for d in devices]
    assert pulse_in_process.device in names
    assert "default" in names
    assert [d.name for d in devices if d.is_default] == ["default"]
    assert all(d.host_api == "ALSA" and d.max_input_channels >= 1 for d in devices)
    table = format_devices_table(devices).splitlines()
    assert table[0].split() == ["index", "name", "host", "API", "inputs", "default", "rate"]
    default_row = next(line for line in table if line.split()[2:3] == ["default"])
    assert default_row.split()[:2] == [str(resolve_device(None).index), "*"]
    assert "Hz" in default_row


def test_resolves_none_index_and_substring(pulse_in_process: PulseNullSink) -> None:
    assert resolve_device(None).name == "default"
    pulse = resolve_device("PuLs")
    assert pulse.name == "pulse"
    assert resolve_device(pulse.index) == pulse


@pytest.fixture
def named_devices(tmp_path: Path) -> Iterator[None]:
    """Three null PCMs whose names overlap, to exercise exact and substring matching."""
    (tmp_path / ".asoundrc").write_text(
        "pcm.amtest { type null }\npcm.amtest2 { type null }\npcm.amtest-usb { type null }\n"
    )
    with environment_in_process({"HOME": str(tmp_path)}):
        yield


@pytest.mark.usefixtures("named_devices")
def test_exact_name_wins_over_substring_matches() -> None:
    assert resolve_device("amtest").name == "amtest"
    assert resolve_device("AMTEST2").name == "amtest2"
    assert resolve_device("test-u").name == "amtest-usb"


@pytest.mark.usefixtures("named_devices")
def test_ambiguous_name_lists_the_candidates() -> None:
    with pytest.raises(SourceError) as caught:
        resolve_device("amtes")
    message = str(caught.value)
    assert "'amtes' is ambiguous" in message
    assert all(f"'{name}'" in message for name in ("amtest", "amtest2", "amtest-usb"))
    assert "\n" not in message


@pytest.mark.usefixtures("named_devices")
def test_unknown_name_and_index_list_what_is_available() -> None:
    with pytest.raises(SourceError) as caught:
        resolve_device("no-such-mic")
    assert str(caught.value).startswith("no input device matches 'no-such-mic'; available: ")
    assert "'amtest2'" in str(caught.value)

    with pytest.raises(SourceError, match=r"audio device 9999 does not exist; input devices: .*"):
        resolve_device(9999)


def test_format_devices_table_aligns_columns() -> None:
    devices = [
        InputDevice(0, "pulse", "ALSA", 32, 44100.0, False),
        InputDevice(11, "USB Audio Device: Mic (hw:1,0)", "ALSA", 2, 48000.0, True),
    ]

    lines = format_devices_table(devices).splitlines()

    assert len(lines) == 3
    assert lines[0].split() == ["index", "name", "host", "API", "inputs", "default", "rate"]
    assert lines[1].startswith("    0     pulse ")
    assert lines[2].startswith("   11  *  USB Audio Device: Mic (hw:1,0)  ALSA ")
    assert lines[1].endswith("44100 Hz") and lines[2].endswith("48000 Hz")
    assert lines[1].index("ALSA") == lines[2].index("ALSA")
    assert format_devices_table([]) == "no input devices found"


# -- real capture from the PulseAudio null sink (paced like a live microphone) --------------


@pytest.mark.parametrize("rate_hz", [48000, 16000])
def test_captures_a_tone_in_real_time(
    pulse_in_process: PulseNullSink,
    running: list[MicrophoneSource],
    tmp_path: Path,
    rate_hz: int,
) -> None:
    source = MicrophoneSource(_mic(device=pulse_in_process.device, sample_rate_hz=rate_hz))
    running.append(source)
    fmt = source.open()
    assert (fmt.sample_rate_hz, fmt.channels) == (rate_hz, 1)
    assert "pulse" in fmt.description
    ring = RingBuffer(rate_hz * 10, 1, rate_hz)
    source.start(ring)
    pulse_in_process.play(write_tone_wav(tmp_path / "tone.wav", TONE_HZ, seconds=8.0))

    wait_until(lambda: _rms_of_newest(ring, rate_hz // 10) > 0.1, "the tone to arrive")
    start_index, start_monotonic = ring.written_frames, time.monotonic()
    start_time = ring.time_of(start_index)
    assert ring.wait_for_data(start_index + round(1.5 * rate_hz), timeout=WAIT_SECONDS)
    end_index, end_monotonic = ring.written_frames, time.monotonic()

    tone = ring.read(start_index, start_index + rate_hz)
    assert tone is not None
    assert abs(_peak_hz(tone[:, 0], rate_hz) - TONE_HZ) <= 10
    assert float(np.sqrt(np.mean(np.square(tone)))) > 0.1
    # Paced by the sink's clock: frames arrive at the configured rate, not faster or slower.
    delivered_rate = (end_index - start_index) / (end_monotonic - start_monotonic)
    assert 0.75 * rate_hz < delivered_rate < 1.25 * rate_hz
    # The ring's clock anchor follows real time: the newest frame is "now", and a frame's
    # time stays put while more audio arrives.
    assert abs(ring.time_of(ring.written_frames) - time.time()) < 1.0
    assert abs(ring.time_of(start_index) - start_time) < 0.25

    began = time.monotonic()
    source.stop()
    assert time.monotonic() - began < STOP_TIMEOUT_SECONDS
    stats = source.stats()
    assert stats.frames == ring.written_frames
    assert stats.blocks >= 30
    assert stats.frames == stats.blocks * round(rate_hz * BLOCK_SECONDS)
    assert stats.last_block_monotonic is not None
    assert stats.last_block_monotonic <= time.monotonic()
    assert source.error is None
    assert source.finished is False
    frozen = ring.written_frames
    time.sleep(0.3)
    assert ring.written_frames == frozen  # really stopped


_CHILD_CAPTURE = """
import json, sys, time
import numpy as np
from monitor.audio.microphone import MicrophoneSource, resolve_device
from monitor.config import MicrophoneSourceConfig
from monitor.audio.ringbuffer import RingBuffer

results = {}
for spec in json.loads(sys.argv[1]):
    cfg = MicrophoneSourceConfig(type="microphone", device=spec, sample_rate_hz=48000)
    source = MicrophoneSource(cfg)
    source.open()
    ring = RingBuffer(48000 * 5, 1, 48000)
    source.start(ring)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            end = ring.written_frames
            if end >= 4800 and float(np.sqrt(np.mean(ring.read(end - 4800, end) ** 2))) > 0.1:
                break
            time.sleep(0.01)
        assert ring.wait_for_data(end + 48000, timeout=20)
        tone = ring.read(end, end + 48000)[:, 0]
    finally:
        source.stop()
    peak = np.argmax(np.abs(np.fft.rfft(tone * np.hanning(len(tone)))))
    results[str(spec)] = [resolve_device(spec).name, float(peak)]
print(json.dumps(results))
"""


def test_a_child_process_captures_with_the_fixture_env(
    pulse_null_sink: PulseNullSink, tmp_path: Path
) -> None:
    # What subprocess end-to-end tests rely on: the child gets only `env`; no device,
    # "default" and "pulse" all capture what the sink plays.
    pulse_null_sink.play(write_tone_wav(tmp_path / "tone.wav", TONE_HZ, seconds=30.0))

    child = run_python(
        _CHILD_CAPTURE, json.dumps([None, "default", "pulse"]), env=pulse_null_sink.env
    )

    assert child.returncode == 0, child.stderr
    results = json.loads(child.stdout.splitlines()[-1])
    assert results["None"][0] == "default"
    assert results["default"][0] == "default"
    assert results["pulse"][0] == "pulse"
    assert all(abs(peak_hz - TONE_HZ) <= 10 for _, peak_hz in results.values())


def test_uses_the_device_default_rate_when_none_is_configured(
    pulse_in_process: PulseNullSink, running: list[MicrophoneSource]
) -> None:
    device = resolve_device(pulse_in_process.device)
    source = MicrophoneSource(_mic(device=pulse_in_process.device))
    running.append(source)

    fmt = source.open()

    assert fmt.sample_rate_hz == round(device.default_sample_rate_hz)


def test_stop_is_idempotent_prompt_and_the_source_can_reopen(
    pulse_in_process: PulseNullSink, running: list[MicrophoneSource]
) -> None:
    source = MicrophoneSource(_mic(device=pulse_in_process.device, sample_rate_hz=16000))
    running.append(source)
    source.stop()  # never opened: nothing to do
    source.open()
    source.stop()  # opened, never started
    source.open()
    ring = RingBuffer(16000 * 5, 1, 16000)
    source.start(ring)
    assert ring.wait_for_data(1600, timeout=WAIT_SECONDS)

    began = time.monotonic()
    source.stop()
    source.stop()
    assert time.monotonic() - began < STOP_TIMEOUT_SECONDS
    assert source.error is None

    source.open()
    again = RingBuffer(16000 * 5, 1, 16000)
    source.start(again)
    assert again.wait_for_data(1600, timeout=WAIT_SECONDS)
    source.stop()


def test_device_that_disappears_sets_error(
    pulse_in_process: PulseNullSink, running: list[MicrophoneSource]
) -> None:
    source = MicrophoneSource(_mic(device=pulse_in_process.device, sample_rate_hz=16000))
    running.append(source)
    source.open()
    ring = RingBuffer(16000 * 5, 1, 16000)
    source.start(ring)
    assert ring.wait_for_data(1600, timeout=WAIT_SECONDS)
    assert source.error is None

    pulse_in_process.stop_server()

    wait_until(lambda: source.error is not None, "the source to report the lost device")
    assert isinstance(source.error, SourceError)
    assert "stopped unexpectedly" in str(source.error)
    began = time.monotonic()
    source.stop()
    assert time.monotonic() - began < STOP_TIMEOUT_SECONDS


def test_start_checks_open_and_ring_format(
    pulse_in_process: PulseNullSink, running: list[MicrophoneSource]
) -> None:
    source = MicrophoneSource(_mic(device=pulse_in_process.device, sample_rate_hz=16000))
    running.append(source)
    with pytest.raises(SourceError, match="before open"):
        source.start(RingBuffer(16000, 1, 16000))
    source.open()
    with pytest.raises(ValueError, match="48000 Hz"):
        source.start(RingBuffer(16000, 1, 48000))
    with pytest.raises(ValueError, match="2 ch"):
        source.start(RingBuffer(16000, 2, 16000))


# -- bad devices: one-line SourceError ----------------------------------------------------


def _open_error(cfg: MicrophoneSourceConfig) -> str:
    source = MicrophoneSource(cfg)
    try:
        with pytest.raises(SourceError) as caught:
            source.open()
    finally:
        source.stop()
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.usefixtures("pulse_in_process")
def test_bad_index_and_name_give_one_line_errors() -> None:
    assert "audio device 4242 does not exist" in _open_error(_mic(device=4242))
    message = _open_error(_mic(device="usb"))
    assert message.startswith("no input device matches 'usb'; available: ")
    assert "'pulse'" in message and "'default'" in message


def test_rate_the_device_refuses_gives_one_line_error(pulse_in_process: PulseNullSink) -> None:
    # Config validation stops at 384 kHz, and every virtual device here accepts 8-384 kHz,
    # so the rate PortAudio refuses is set past validation.
    cfg = _mic(device=pulse_in_process.device).model_copy(update={"sample_rate_hz": 1_000_000})

    message = _open_error(cfg)

    assert "'pulse' at 1000000 Hz" in message
    assert "Invalid sample rate" in message


def test_more_channels_than_the_device_has_gives_one_line_error(tmp_path: Path) -> None:
    require_alsa_plugin("speex")  # the speex preprocessor is a mono-only capture PCM
    (tmp_path / ".asoundrc").write_text('pcm.ammono { type speex slave.pcm "null" }\n')
    with environment_in_process({"HOME": str(tmp_path)}):
        assert resolve_device("ammono").max_input_channels == 1

        message = _open_error(_mic(device="ammono", sample_rate_hz=16000, channels=2))

    assert "'ammono' at 16000 Hz: 2 channels configured but the device has 1" in message


@pytest.mark.slow
def test_missing_portaudio_library_says_what_to_install() -> None:
    # A fresh interpreter in which the dynamic loader finds no libportaudio, as on a system
    # without the libportaudio2 package (the sounddevice wheel does not bundle it on Linux).
    script = (
        "import ctypes.util\n"
        "ctypes.util.find_library = lambda name: None\n"
        "from monitor.audio.microphone import list_input_devices\n"
        "from monitor.errors import SourceError\n"
        "try:\n"
        "    list_input_devices()\n"
        "except SourceError as err:\n"
        "    print(err)\n"
    )

    child = run_python(script, timeout_seconds=60)

    assert child.returncode == 0, child.stderr
    assert child.stdout.startswith("cannot load the PortAudio library")
    assert "apt install libportaudio2" in child.stdout


# -- the ALSA file plugin (exact samples, unpaced) ----------------------------------------


class _KeepFirstFrames(RingBuffer):
    """A real ring buffer that also keeps a copy of the first frames ever written to it.

    The file device is unpaced: by the time the test looks, the ring has been overwritten
    many times, so the file's samples must be caught as they pass.
    """

    def __init__(self, capacity_frames: int, channels: int, rate_hz: int, keep: int) -> None:
        super().__init__(capacity_frames, channels, rate_hz)
        self.first = np.full((keep, channels), np.nan, dtype=np.float32)
        self.kept = 0

    def write(self, block: np.ndarray, wall_time_end: float | None = None) -> None:
        take = min(len(block), len(self.first) - self.kept)
        if take > 0:
            self.first[self.kept : self.kept + take] = block[:take]
            self.kept += take
        super().write(block, wall_time_end)


def test_file_device_delivers_the_files_samples_in_order(
    alsa_file_device: Callable[[np.ndarray], AlsaFileDevice], running: list[MicrophoneSource]
) -> None:
    frames = 16384
    ramp = (np.arange(frames, dtype=np.float32) + 1) / frames  # exact in float32
    device = alsa_file_device(np.column_stack([ramp, -ramp]))
    source = MicrophoneSource(_mic(device=device.device, sample_rate_hz=16000, channels=2))
    running.append(source)
    assert source.open().channels == 2
    keep = frames + FILE_PADDING_FRAMES + frames  # the samples, the padding and past the end
    ring = _KeepFirstFrames(4 * frames, 2, 16000, keep=keep)

    source.start(ring)
    wait_until(lambda: ring.kept == keep, "the file's frames and some after it")
    source.stop()

    np.testing.assert_array_equal(ring.first[:frames, 0], ramp)
    np.testing.assert_array_equal(ring.first[:frames, 1], -ramp)
    assert not ring.first[frames:].any()  # then silence, also past the end of the raw file
    assert source.error is None


def test_unread_small_ring_counts_lost_frames(
    alsa_file_device: Callable[[np.ndarray], AlsaFileDevice], running: list[MicrophoneSource]
) -> None:
    device = alsa_file_device(np.zeros(1600, dtype=np.float32))
    source = MicrophoneSource(_mic(device=device.device, sample_rate_hz=16000))
    running.append(source)
    source.open()
    capacity = 1600
    ring = RingBuffer(capacity, 1, 16000)

    source.start(ring)
    wait_until(lambda: ring.written_frames >= 50 * capacity, "the ring to be lapped")
    source.stop()

    written = ring.written_frames
    assert ring.lost_frames == written - capacity
    assert ring.read(0, capacity) is None  # the oldest audio was overwritten
    assert ring.read(written - capacity, written) is not None
    stats = source.stats()
    assert stats.frames == written
    assert stats.frames == stats.blocks * round(16000 * BLOCK_SECONDS)
    assert source.error is None
