"""The matrix resampler against scipy's resample_poly, which it replaces."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import resample_poly

from monitor.audio.resample import (
    MAX_MATRIX_ENTRIES,
    PolyphaseResampler,
    StreamResampler,
    lowpass_taps,
    resample_to,
    resampler,
)
from tests.support.audio import tone
from tests.support.processes import run_python

RATES_HZ = [8000, 11025, 16000, 22050, 24000, 32000, 44100, 88200, 96000, 192000]


def _reference(samples: np.ndarray, rate_hz: int, target_hz: int) -> np.ndarray:
    from math import gcd

    common = gcd(rate_hz, target_hz)
    out: np.ndarray = resample_poly(
        samples.astype(np.float64), target_hz // common, rate_hz // common
    )
    return out


@pytest.mark.parametrize("rate_hz", RATES_HZ)
def test_ten_seconds_equal_resample_poly(rate_hz: int) -> None:
    rng = np.random.default_rng(rate_hz)
    samples = (rng.standard_normal(rate_hz * 10) * 0.3).astype(np.float32)
    got = resampler(rate_hz, 48000)(samples)
    expected = _reference(samples, rate_hz, 48000)
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-6)


@settings(max_examples=60, deadline=None)
@given(
    rate_hz=st.sampled_from(RATES_HZ),
    target_hz=st.sampled_from([16000, 44100, 48000]),
    length=st.integers(min_value=1, max_value=5000),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_any_length_and_rate_pair_equals_resample_poly(
    rate_hz: int, target_hz: int, length: int, seed: int
) -> None:
    samples = np.random.default_rng(seed).uniform(-1.0, 1.0, length).astype(np.float32)
    got = resampler(rate_hz, target_hz)(samples)
    expected = _reference(samples, rate_hz, target_hz)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_a_tone_keeps_its_frequency_and_level() -> None:
    rate_hz = 44100
    out = resampler(rate_hz, 48000)(tone(2.0, 1000.0, rate_hz=rate_hz))
    spectrum = np.abs(np.fft.rfft(out[4800:-4800] * np.hanning(out.size - 9600)))
    peak_hz = np.argmax(spectrum) * 48000 / (out.size - 9600)
    assert abs(peak_hz - 1000.0) < 1.0
    assert abs(np.abs(out[4800:-4800]).max() - 0.5) < 0.01


def test_odd_rate_pairs_fall_back_to_resample_poly() -> None:
    # 48000 / 96006 = 8000 / 16001: a block is 16001 samples, the matrix would be ~128M entries.
    assert PolyphaseResampler.matrix_entries(48000, 96006) > MAX_MATRIX_ENTRIES
    chosen = resampler(96006, 48000)
    assert not isinstance(chosen, PolyphaseResampler)
    samples = np.random.default_rng(0).uniform(-1, 1, 20000).astype(np.float32)
    np.testing.assert_allclose(chosen(samples), _reference(samples, 96006, 48000), atol=2e-6)


def test_long_input_is_done_in_chunks() -> None:
    # More rows than one product takes at once (CHUNK_ROWS): the seams must not show.
    samples = np.random.default_rng(1).uniform(-1, 1, 44100 * 20).astype(np.float32)
    got = resampler(44100, 48000)(samples)
    np.testing.assert_allclose(got, _reference(samples, 44100, 48000), atol=2e-6)


def test_the_filter_is_scipys_firwin() -> None:
    from scipy.signal import firwin

    for count, cutoff in [(3201, 1 / 160), (61, 1 / 3), (121, 1 / 6), (2001, 1 / 100)]:
        expected = firwin(count, cutoff, window=("kaiser", 5.0))
        np.testing.assert_allclose(lowpass_taps(count, cutoff), expected, rtol=0, atol=1e-15)


@pytest.mark.slow
def test_resampling_does_not_import_scipy() -> None:
    script = (
        "import sys, numpy as np\n"
        "from monitor.audio.resample import resample_to\n"
        "resample_to(np.ones(44100, np.float32), 44100)\n"
        "print('scipy' in sys.modules)\n"
    )
    done = run_python(script, timeout_seconds=60, check=True)
    assert done.stdout.strip() == "False"


def _stream(rate_hz: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(rate_hz)
    t = np.arange(round(rate_hz * seconds)) / rate_hz
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    return (tone + 0.2 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("rate_hz", [8000, 16000, 22050, 32000, 44100, 48000])
@pytest.mark.parametrize("hop_seconds", [1.0, 0.5])
def test_stream_windows_equal_each_window_resampled_alone(rate_hz: int, hop_seconds: float) -> None:
    stream = _stream(rate_hz, 16.0)
    size, hop = rate_hz * 10, round(rate_hz * hop_seconds)
    # In order, one skipped (a worker that fell behind), one off the output grid, and a short
    # final window, as the Windower hands them out.
    starts = [0, hop, 2 * hop, 4 * hop, 4 * hop + 1, 5 * hop]
    windows = [(start, stream[start : start + size]) for start in starts]
    windows.append((6 * hop + 7, stream[6 * hop + 7 : 6 * hop + 7 + size // 2]))
    streaming = StreamResampler(rate_hz, 48000)
    for start, window in windows:
        got = streaming(window, start)
        expected = resample_to(window, rate_hz)
        assert got.dtype == np.float32
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_a_stream_window_computes_little_more_than_its_hop() -> None:
    stream = _stream(44100, 12.0)
    streaming = StreamResampler(44100, 48000)
    streaming(stream[:441000], 0)
    assert streaming.samples_computed == 480000
    streaming(stream[44100:485100], 44100)
    # The new second, the window's head, and the reach before the reused part ends.
    assert 48000 < streaming.samples_computed - 480000 < 48000 + 4 * streaming.reach + 200


def test_the_reach_at_the_window_ends_is_needed() -> None:
    stream = _stream(16000, 12.0)
    honest, careless = StreamResampler(16000, 48000), StreamResampler(16000, 48000)
    careless.reach = 2  # edge outputs taken from the previous window, where they differ
    for start in (0, 16000):
        window = stream[start : start + 160000]
        expected = resample_to(window, 16000)
        np.testing.assert_allclose(honest(window, start), expected, atol=1e-6)
        difference = np.abs(careless(window, start) - expected).max()
    assert difference > 1e-3
