"""Test signals (tones, seeded noise) and the audio files written from them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

MODEL_RATE_HZ = 48000

# (seconds, rate_hz, channels) -> (frames, channels) float32 samples.
Signal = Callable[[float, int, int], np.ndarray]


def _times(seconds: float, rate_hz: int) -> np.ndarray:
    return np.arange(round(seconds * rate_hz)) / rate_hz


def tone(
    seconds: float,
    frequency_hz: float = 1000.0,
    *,
    rate_hz: int = MODEL_RATE_HZ,
    amplitude: float = 0.5,
    offset: float = 0.0,
    channels: int | None = None,
) -> np.ndarray:
    """A float32 sine plus a DC `offset`: 1-D, or (frames, channels) when `channels` is given."""
    wave = amplitude * np.sin(2 * np.pi * frequency_hz * _times(seconds, rate_hz)) + offset
    mono = wave.astype(np.float32)
    return mono if channels is None else np.repeat(mono[:, None], channels, axis=1)


def noise(
    seconds: float, rate_hz: int, channels: int = 1, *, amplitude: float = 0.1, seed: int = 1
) -> np.ndarray:
    """Seeded white noise, different in every channel: (frames, channels) float32."""
    rng = np.random.default_rng(seed)
    frames = round(rate_hz * seconds)
    return (amplitude * rng.standard_normal((frames, channels))).astype(np.float32)


def noisy_tone(seconds: float, rate_hz: int, channels: int) -> np.ndarray:
    """440 Hz with a little seeded noise, the same in every channel: (frames, channels) float32."""
    t = _times(seconds, rate_hz)
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(0).standard_normal(
        len(t)
    )
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def write_clip(
    path: Path,
    seconds: float,
    rate_hz: int = 44100,
    channels: int = 2,
    *,
    signal: Signal = noisy_tone,
    **soundfile_options: Any,
) -> Path:
    """Write `signal` as an audio file (format from the suffix or `soundfile_options`)."""
    sf.write(path, signal(seconds, rate_hz, channels), rate_hz, **soundfile_options)
    return path


def model_windows(rate_hz: int = 48000) -> list[np.ndarray]:
    """Three windows of different lengths and kinds for comparing backends: 1 s of noise, a
    5 s tone, 10 s (the tower's full window) of louder noise."""
    rng = np.random.default_rng(11)
    t = np.arange(5 * rate_hz) / rate_hz
    return [
        (0.1 * rng.standard_normal(rate_hz)).astype(np.float32),
        (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32),
        (0.2 * rng.standard_normal(10 * rate_hz)).astype(np.float32),
    ]
