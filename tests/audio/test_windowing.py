"""Windows: exact 48 kHz mono length from any rate, tones keep their pitch, hop and lag rules."""

from __future__ import annotations

from datetime import timezone

import numpy as np
import pytest

from monitor.audio.resample import MODEL_SAMPLE_RATE_HZ, resample_to
from monitor.audio.ringbuffer import RingBuffer
from monitor.audio.windowing import Windower, to_mono
from tests.support.audio import tone


def peak_hz(samples: np.ndarray, rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate_hz)[np.argmax(spectrum)])


@pytest.mark.parametrize("rate_hz", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_windows_are_48k_mono_exact_length_and_keep_pitch(rate_hz: int, channels: int) -> None:
    ring = RingBuffer(rate_hz * 12, channels, rate_hz)
    ring.write(tone(7.0, rate_hz=rate_hz, channels=channels), wall_time_end=1_000_000.0)
    windower = Windower(ring, "src", window_seconds=5.0, hop_seconds=1.0, catch_up=True)
    windows = []
    while (w := windower.next_window(0)) is not None:
        windows.append(w)
    assert len(windows) == 3  # ends at 5, 6 and 7 s
    for w in windows:
        assert w.sample_rate_hz == MODEL_SAMPLE_RATE_HZ
        assert w.samples.dtype == np.float32 and w.samples.ndim == 1
        assert len(w.samples) == 5 * MODEL_SAMPLE_RATE_HZ
        assert abs(peak_hz(w.samples, MODEL_SAMPLE_RATE_HZ) - 1000.0) < 1.0
        # Away from the edges the resampled tone keeps its amplitude.
        assert np.max(np.abs(w.samples[4800:-4800])) == pytest.approx(0.5, abs=0.01)
    assert [w.end_index for w in windows] == [5 * rate_hz, 6 * rate_hz, 7 * rate_hz]
    assert windows[0].end_time.tzinfo == timezone.utc
    assert windows[-1].end_time.timestamp() == pytest.approx(1_000_000.0)
    assert windows[0].start_time.timestamp() == pytest.approx(1_000_000.0 - 7.0)


def test_no_resampling_at_48k_is_the_same_samples() -> None:
    x = np.random.default_rng(0).standard_normal(4800).astype(np.float32)
    assert resample_to(x, 48000) is x or np.array_equal(resample_to(x, 48000), x)


@pytest.mark.parametrize("n", [1, 147, 160, 44099, 44101])
def test_resampled_length_is_rounded_exactly(n: int) -> None:
    out = resample_to(np.zeros(n, np.float32), 44100)
    assert len(out) == round(n * 48000 / 44100)


def test_downmix_averages_channels() -> None:
    stereo = np.stack([np.ones(10), -np.ones(10) * 0.5], axis=1).astype(np.float32)
    np.testing.assert_allclose(to_mono(stereo), 0.25)


def test_live_windower_skips_to_newest_when_behind() -> None:
    rate = 16000
    ring = RingBuffer(rate * 30, 1, rate)
    windower = Windower(ring, "mic", window_seconds=2.0, hop_seconds=0.5)
    ring.write(tone(10.0, rate_hz=rate, channels=1))  # the worker was busy for 10 s of audio
    w = windower.next_window(0)
    assert w is not None
    assert w.end_index == 10 * rate  # the newest window, not the oldest pending one
    assert windower.skipped_windows == 16  # ends 2.0 .. 9.5 s were never scored
    assert windower.next_window(0) is None


def test_lapped_reader_recovers() -> None:
    rate = 8000
    ring = RingBuffer(rate * 3, 1, rate)
    windower = Windower(ring, "mic", window_seconds=2.0, hop_seconds=1.0, catch_up=True)
    ring.write(tone(10.0, rate_hz=rate, channels=1))  # far more than the ring holds
    assert windower.next_window(0) is None  # the pending window was overwritten
    w = windower.next_window(0)
    assert w is not None
    assert w.end_index == 10 * rate
    assert ring.lost_frames > 0


def test_final_window_covers_the_tail_of_a_finite_source() -> None:
    rate = 16000
    ring = RingBuffer(rate * 20, 1, rate)
    windower = Windower(ring, "f", window_seconds=4.0, hop_seconds=4.0, catch_up=True)
    ring.write(tone(10.0, rate_hz=rate, channels=1))
    ends = []
    while (w := windower.next_window(0)) is not None:
        ends.append(w.end_index)
    final = windower.final_window()
    assert ends == [4 * rate, 8 * rate]
    assert final is not None
    assert (final.start_index, final.end_index) == (6 * rate, 10 * rate)
    assert windower.final_window() is None


def test_clip_shorter_than_a_window_gives_one_short_window() -> None:
    rate = 22050
    ring = RingBuffer(rate * 20, 1, rate)
    windower = Windower(ring, "f", window_seconds=5.0, hop_seconds=1.0, catch_up=True)
    ring.write(tone(1.5, rate_hz=rate, channels=1))
    assert windower.next_window(0) is None
    final = windower.final_window()
    assert final is not None
    assert len(final.samples) == round(1.5 * 48000)


@pytest.mark.parametrize(
    ("rate_hz", "hop_seconds", "expected"),
    [
        # 44.1 kHz, 1 s hop: starts 0, 44100, 88200 -> 0, 48000, 96000 at 48 kHz.
        (44100, 1.0, [0, 48000, 96000]),
        (16000, 0.5, [0, 24000, 48000]),
        (48000, 0.25, [0, 12000, 24000]),
        # 0.01 s at 44.1 kHz is 441 samples = 480 at 48 kHz: still whole.
        (44100, 0.01, [0, 480, 960]),
        # 0.001 s at 44.1 kHz is 44 samples (the hop is rounded) = 47.89... at 48 kHz.
        (44100, 0.001, [0, None, None]),
    ],
)
def test_windows_carry_their_start_at_the_model_rate(
    rate_hz: int, hop_seconds: float, expected: list[int | None]
) -> None:
    ring = RingBuffer(rate_hz * 4, 1, rate_hz)
    ring.write(tone(3.0, rate_hz=rate_hz, channels=1))
    windower = Windower(ring, "src", window_seconds=1.0, hop_seconds=hop_seconds, catch_up=True)
    windows = [windower.next_window(0) for _ in expected]
    assert [w.model_start_index if w else "missing" for w in windows] == expected
    for w in windows:
        assert w is not None
        if w.model_start_index is not None:
            assert w.model_start_index * rate_hz == w.start_index * MODEL_SAMPLE_RATE_HZ


@pytest.mark.parametrize(("frames", "expected"), [(227115, 302400), (227116, None)])
def test_a_final_window_off_the_grid_has_no_model_position(
    frames: int, expected: int | None
) -> None:
    rate = 22050
    ring = RingBuffer(rate * 20, 1, rate)
    windower = Windower(ring, "f", window_seconds=4.0, hop_seconds=4.0, catch_up=True)
    ring.write(np.zeros((frames, 1), np.float32))
    while windower.next_window(0) is not None:
        pass
    final = windower.final_window()
    assert final is not None
    # It starts 4 s before the end: sample 138915 is 302400 at 48 kHz; 138916 is 302402.17...
    assert final.start_index == frames - 4 * rate
    assert final.model_start_index == expected
