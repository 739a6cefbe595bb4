"""The mel features against the checkpoint's own ClapFeatureExtractor (transformers, numpy)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from monitor.features import (
    MelSettings,
    NumpyMelFeatures,
    TorchMelFeatures,
    check_window,
    hann_window,
    pad_windows,
    slaney_mel_filters,
)
from tests.support.tiny_clap import FEATURE_EXTRACTOR_SETTINGS

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
