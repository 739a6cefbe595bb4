"""The mel features against the checkpoint's own ClapFeatureExtractor (transformers, numpy)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from monitor.model.features import (
    EDGE_MARGIN_SAMPLES,
    MelSettings,
    NumpyMelFeatures,
    StreamingMel,
    check_window,
    hann_window,
    pad_windows,
    slaney_mel_filters,
)
from monitor.model.torch_features import TorchMelFeatures
from tests.support.streams import stream_audio, stream_windows
from tests.support.tiny_clap import FEATURE_EXTRACTOR_SETTINGS

# Compares with transformers' feature extractor: imports torch and transformers.
pytestmark = pytest.mark.slow

RATE_HZ = 48000
# Agreement asked of the features: far below what the model can tell apart. float64 STFTs
# on both sides leave only the final float32 rounding (about 1e-5 dB).
MAX_DB_DIFFERENCE = 1e-3


def _time(seconds: float) -> np.ndarray:
    return np.arange(round(seconds * RATE_HZ)) / RATE_HZ


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    t10 = _time(10.0)
    return {
        "noise_1s": (0.1 * rng.standard_normal(RATE_HZ)).astype(np.float32),
        "tone_1khz_5s": (0.5 * np.sin(2 * np.pi * 1000 * _time(5.0))).astype(np.float32),
        "tone_300hz_3.3s": (0.5 * np.sin(2 * np.pi * 300 * _time(3.3))).astype(np.float32),
        "chirp_10s": (0.3 * np.sin(2 * np.pi * (100 * t10 + 600 * t10**2))).astype(np.float32),
        "quiet_tone_2ms": (1e-4 * np.sin(2 * np.pi * 440 * _time(0.002))).astype(np.float32),
        "seven_samples": (0.3 * rng.standard_normal(7)).astype(np.float32),
        "full_scale_square": np.sign(np.sin(2 * np.pi * 50 * _time(2.0))).astype(np.float32),
        "silence_0.5s": np.zeros(RATE_HZ // 2, dtype=np.float32),
    }


SIGNALS = _signals()


@pytest.fixture(scope="module")
def extractor() -> Any:
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(**FEATURE_EXTRACTOR_SETTINGS)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def settings(extractor: Any) -> MelSettings:
    return MelSettings.from_extractor(extractor.to_dict())


def _numpy_features(settings: MelSettings) -> Callable[[list[np.ndarray]], np.ndarray]:
    return NumpyMelFeatures(settings)


def _torch_features(settings: MelSettings) -> Callable[[list[np.ndarray]], np.ndarray]:
    features = TorchMelFeatures(settings)
    return lambda windows: np.asarray(features(windows).numpy())


IMPLEMENTATIONS = {"numpy": _numpy_features, "torch": _torch_features}


def test_settings_are_read_from_the_extractor(settings: MelSettings) -> None:
    assert settings == MelSettings(
        sample_rate_hz=48000,
        max_samples=480000,
        fft_size=1024,
        hop_length=480,
        mel_bins=64,
        frequency_min_hz=50.0,
        frequency_max_hz=14000.0,
        padding="repeatpad",
    )
    assert settings.frames == 1001
    assert MelSettings.from_dict(settings.to_dict()) == settings


def test_fusion_extractor_is_refused() -> None:
    with pytest.raises(ValueError, match="fusion"):
        MelSettings.from_extractor({**FEATURE_EXTRACTOR_SETTINGS, "truncation": "fusion"})
    with pytest.raises(ValueError, match="padding"):
        MelSettings(padding="mirror")


def test_filter_bank_is_transformers_exactly(extractor: Any, settings: MelSettings) -> None:
    from transformers.audio_utils import mel_filter_bank, window_function

    ours = slaney_mel_filters(settings)
    theirs = mel_filter_bank(
        num_frequency_bins=513,
        num_mel_filters=64,
        min_frequency=50,
        max_frequency=14000,
        sampling_rate=48000,
        norm="slaney",
        mel_scale="slaney",
    )
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours, extractor.mel_filters_slaney)
    np.testing.assert_array_equal(hann_window(1024), window_function(1024, "hann"))


@pytest.mark.parametrize("implementation", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_features_equal_the_extractor(
    extractor: Any, settings: MelSettings, implementation: str, name: str
) -> None:
    window = SIGNALS[name]
    theirs = extractor([window], sampling_rate=RATE_HZ, return_tensors="np")["input_features"]
    ours = IMPLEMENTATIONS[implementation](settings)([window])
    assert ours.shape == theirs.shape == (1, 1, 1001, 64)
    assert ours.dtype == theirs.dtype == np.float32
    difference = float(np.abs(ours - theirs).max())
    feature_range = float(theirs.max() - theirs.min())
    print(f"{implementation} {name}: max |difference| {difference:.2e} dB of {feature_range:.1f}")
    assert difference < MAX_DB_DIFFERENCE


@pytest.mark.parametrize("implementation", sorted(IMPLEMENTATIONS))
def test_a_batch_equals_each_window_alone(settings: MelSettings, implementation: str) -> None:
    features = IMPLEMENTATIONS[implementation](settings)
    windows = [SIGNALS["noise_1s"], SIGNALS["chirp_10s"], SIGNALS["seven_samples"]]
    batched = features(windows)
    assert batched.shape == (3, 1, 1001, 64)
    for i, window in enumerate(windows):
        np.testing.assert_array_equal(batched[i], features([window])[0])


@pytest.mark.parametrize("padding", ["repeat", "pad"])
def test_other_paddings_equal_the_extractor(extractor: Any, padding: str) -> None:
    settings = MelSettings.from_extractor({**extractor.to_dict(), "padding": padding})
    window = SIGNALS["tone_300hz_3.3s"]
    theirs = extractor([window], sampling_rate=RATE_HZ, padding=padding, return_tensors="np")
    for implementation in IMPLEMENTATIONS.values():
        ours = implementation(settings)([window])
        assert float(np.abs(ours - theirs["input_features"]).max()) < MAX_DB_DIFFERENCE


def test_repeat_padding_layout(settings: MelSettings) -> None:
    window = np.arange(1, 4, dtype=np.float32)  # 480000 = 3 * 160000: whole repeats only
    padded = pad_windows([window, np.arange(1, 8, dtype=np.float32)], settings)
    assert padded.shape == (2, 480000)
    assert padded.dtype == np.float64
    np.testing.assert_array_equal(padded[0, :6], [1, 2, 3, 1, 2, 3])
    repeats = 480000 // 7
    np.testing.assert_array_equal(padded[1, repeats * 7 - 2 : repeats * 7], [6, 7])
    assert not padded[1, repeats * 7 :].any()  # the remainder is zeros, not a partial repeat


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (np.zeros((2, 4800), dtype=np.float32), "mono"),
        (np.zeros(0, dtype=np.float32), "no samples"),
        (np.full(4800, np.inf, dtype=np.float32), "NaN or infinite"),
        (np.zeros(480001, dtype=np.float32), "longer than"),
    ],
    ids=["stereo", "empty", "inf", "too-long"],
)
def test_unusable_windows_are_refused(window: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_window(3, window, 480000, RATE_HZ)
    assert check_window(0, np.zeros(10, dtype=np.float64), 480000, RATE_HZ).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# StreamingMel: frames shared between overlapping windows of one stream

FEATURE_CLASSES: dict[str, type[NumpyMelFeatures] | type[TorchMelFeatures]] = {
    "numpy": NumpyMelFeatures,
    "torch": TorchMelFeatures,
}
HOP_FRAMES = 100  # a one-second hop at 48 kHz, in frames of 480 samples
# Frames at each end of a window that are always computed (their support nears the edge).
EDGE_FRAMES = -(-(EDGE_MARGIN_SAMPLES + 512) // 480)


def _as_array(features: Any) -> np.ndarray:
    return np.asarray(features.numpy() if hasattr(features, "numpy") else features)


@pytest.mark.parametrize("implementation", sorted(FEATURE_CLASSES))
@pytest.mark.parametrize("rate_hz", [44100, 48000, 16000])
def test_streamed_windows_equal_each_window_computed_in_full(
    settings: MelSettings, implementation: str, rate_hz: int
) -> None:
    cls = FEATURE_CLASSES[implementation]
    full, streaming = cls(settings), StreamingMel(cls(settings))
    windows = stream_windows(rate_hz, 15.0)
    assert len(windows) == 6
    del windows[3]  # a skipped window (a live worker that fell behind): its frames are missing
    differences = []
    for window in windows:
        assert window.model_start_index == window.start_index * 48000 // rate_hz
        ours = _as_array(streaming([window.samples], [window.model_start_index]))
        theirs = _as_array(full([window.samples]))
        assert ours.shape == theirs.shape == (1, 1, 1001, 64)
        assert ours.dtype == np.float32
        differences.append(np.abs(ours - theirs)[0, 0])
    difference = np.max(differences, axis=0)  # (frames, mel bins)
    assert streaming.frames_reused > 0
    # Interior frames come from the window that computed them first: equal up to the rounding
    # of each window's own float32 resampling, which only shows where a band holds next to
    # nothing but that rounding (above a 16 kHz source's 8 kHz, the resampler's stopband at
    # -75 dB). There the per-window computation is no more exact than the cached one.
    passband = slaney_mel_filters(settings)[: 513 * min(rate_hz // 2, 24000) // 24000].any(axis=0)
    bands = np.flatnonzero(passband)[:-2] if rate_hz < 44100 else np.arange(64)
    assert float(difference[:, bands].max()) < MAX_DB_DIFFERENCE
    assert float(difference.max()) < 10 * MAX_DB_DIFFERENCE


@pytest.mark.parametrize("implementation", sorted(FEATURE_CLASSES))
def test_the_next_window_computes_only_its_new_frames_and_edges(
    settings: MelSettings, implementation: str
) -> None:
    streaming = StreamingMel(FEATURE_CLASSES[implementation](settings))
    first, second = stream_windows(48000, 11.0)
    streaming([first.samples], [first.model_start_index])
    assert streaming.frames_computed == 1001
    assert streaming.frames_reused == 0
    streaming([second.samples], [second.model_start_index])
    computed = streaming.frames_computed - 1001
    assert EDGE_FRAMES == 6
    assert computed == HOP_FRAMES + 2 * EDGE_FRAMES
    assert streaming.frames_reused == 1001 - computed


@pytest.mark.parametrize("implementation", sorted(FEATURE_CLASSES))
def test_windows_the_cache_cannot_serve_are_computed_in_full(
    settings: MelSettings, implementation: str
) -> None:
    cls = FEATURE_CLASSES[implementation]
    full, streaming = cls(settings), StreamingMel(cls(settings))
    stream = stream_audio(48000, 12.0)
    first, shifted = stream[:480000], stream[48100:528100]
    short = stream[96000:254407]  # 3.3 s and 7 samples: its copies start off the frame grid
    streaming([first], [0])
    computed, cached = streaming.frames_computed, streaming.cached_frames
    # 48100 is not on the 480-sample frame grid: its frames are no frames of the cache's.
    ours = _as_array(streaming([shifted, short, SIGNALS["chirp_10s"]], [48100, 96000, None]))
    theirs = _as_array(full([shifted, short, SIGNALS["chirp_10s"]]))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=MAX_DB_DIFFERENCE)
    assert streaming.frames_computed == computed + 3 * 1001
    assert streaming.frames_reused == 0
    assert streaming.cached_frames == cached  # none of them was stored
    # Without any position: the wrapped computation itself, in its own output type.
    short = SIGNALS["tone_300hz_3.3s"]
    plain = streaming([short], [None])
    assert type(plain) is type(full([short]))
    np.testing.assert_array_equal(_as_array(plain), _as_array(full([short])))
    with pytest.raises(ValueError, match="2 positions for 1 windows"):
        streaming([first], [0, 48000])
    with pytest.raises(ValueError, match=">= 0"):
        streaming([first], [-480])


# Frames a later window computes (1 s hop, 44.1 kHz source): the hop's 100 new frames, plus
# those that are this window's alone: 6 at each end of every copy (5 before a seam, where the
# copy's last frame centre falls 480 samples short of a full hop), and the zero padding's.
SHORT_WINDOW_CASES = {
    (5.0, "repeatpad"): 100 + 2 * (6 + 5) + 1,  # 2 copies; the last frame sits on the end
    (3.0, "repeatpad"): 100 + 3 * (6 + 5) + 101,  # 3 copies, then 1 s of zeros
    (3.0, "repeat"): 100 + 3 * (6 + 5) + 12,  # a 4th copy cut at 1 s: its frames are edges
    (4.0, "pad"): 100 + (6 + 5) + 601,  # one copy, then 6 s of zeros
}


@pytest.mark.parametrize("implementation", sorted(FEATURE_CLASSES))
@pytest.mark.parametrize(("window_seconds", "padding"), sorted(SHORT_WINDOW_CASES))
def test_short_windows_are_served_copy_by_copy(
    settings: MelSettings, implementation: str, window_seconds: float, padding: str
) -> None:
    padded = replace(settings, padding=padding)
    cls = FEATURE_CLASSES[implementation]
    full, streaming = cls(padded), StreamingMel(cls(padded))
    computed = []
    for window in stream_windows(44100, 12.0, window_seconds=window_seconds):
        before = streaming.frames_computed
        ours = _as_array(streaming([window.samples], [window.model_start_index]))
        computed.append(streaming.frames_computed - before)
        theirs = _as_array(full([window.samples]))
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=MAX_DB_DIFFERENCE)
    if padding != "pad":
        assert computed[0] < 1001  # even the first window: its copies share their frames
    assert set(computed[1:]) == {SHORT_WINDOW_CASES[window_seconds, padding]}


def test_the_cache_is_a_bounded_ring(settings: MelSettings) -> None:
    streaming = StreamingMel(NumpyMelFeatures(settings))
    assert streaming.capacity_frames == 2 * 1001
    stream = stream_audio(48000, 40.0)
    for second in range(31):
        start = second * 48000
        streaming([stream[start : start + 480000]], [start])
        assert streaming.cached_frames <= streaming.capacity_frames
    assert streaming.cached_frames > 1001 - 2 * EDGE_FRAMES  # the ring is really in use
    # One window's worth of slots is enough to be right, only less is refused.
    small = StreamingMel(NumpyMelFeatures(settings), capacity_frames=1001)
    full = NumpyMelFeatures(settings)
    for start in (0, 48000, 144000):
        window = stream[start : start + 480000]
        np.testing.assert_allclose(small([window], [start]), full([window]), atol=1e-4)
    assert small.frames_reused > 0
    with pytest.raises(ValueError, match="at least 1001"):
        StreamingMel(NumpyMelFeatures(settings), capacity_frames=1000)


def test_a_position_going_back_starts_a_new_stream(settings: MelSettings) -> None:
    full, streaming = NumpyMelFeatures(settings), StreamingMel(NumpyMelFeatures(settings))
    one, other = stream_audio(48000, 11.0, seed=1), stream_audio(48000, 11.0, seed=2)
    streaming([one[:480000], one[48000:528000]], [0, 48000])
    # Another stream at the same positions: the first stream's frames must not be reused.
    ours = streaming([other[48000:528000]], [48000])
    np.testing.assert_allclose(ours, full([other[48000:528000]]), atol=1e-4)
    streaming.reset()
    assert streaming.cached_frames == 0


def test_keyed_streams_interleaved_keep_their_own_frames(settings: MelSettings) -> None:
    full, streaming = NumpyMelFeatures(settings), StreamingMel(NumpyMelFeatures(settings))
    one, other = stream_audio(48000, 13.0, seed=1), stream_audio(48000, 13.0, seed=2)
    # Two sources at the same positions, alternating within and across batches.
    for start in (0, 48000, 96000):
        batch = [one[start : start + 480000], other[start : start + 480000]]
        ours = streaming(batch, [("kitchen", start), ("porch", start)])
        np.testing.assert_allclose(ours, full(batch), atol=1e-4)
    # Each stream reused its own interior frames: far fewer computed than 6 whole windows.
    # (Caches dropped at every switch of source would compute all 6 x 1001.)
    assert streaming.frames_computed < 3 * 1001
    assert streaming.cached_frames <= 2 * streaming.capacity_frames


def test_the_number_of_stream_caches_is_bounded(settings: MelSettings) -> None:
    streaming = StreamingMel(NumpyMelFeatures(settings), max_streams=2)
    audio = stream_audio(48000, 10.0)
    for key in ("a", "b", "c"):
        streaming([audio], [(key, 0)])
    assert streaming.cached_frames <= 2 * streaming.capacity_frames
