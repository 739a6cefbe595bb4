"""Generated windows that span what a microphone hears: to calibrate a static int8 export, and
(another seed) to check a precision's agreement with fp32."""

from __future__ import annotations

import numpy as np

CALIBRATION_WINDOWS = 16
CALIBRATION_SEED = 20261201


def calibration_windows(
    sample_rate_hz: int,
    max_samples: int,
    count: int = CALIBRATION_WINDOWS,
    seed: int = CALIBRATION_SEED,
) -> list[np.ndarray]:
    """`count` full windows cycling through quiet and loud noise, tones with harmonics,
    chirps, clicks and modulated noise, each over a noise floor: static quantisation fixes
    every activation's range from these, so they reach from a quiet room (-70 dBFS) to a
    loud event (about -6 dBFS peak). Seeded: the same windows at every export; another seed
    gives windows of the same kinds that the calibration has not seen."""
    rng = np.random.default_rng(seed)
    t = np.arange(max_samples, dtype=np.float64) / sample_rate_hz
    nyquist = sample_rate_hz / 2
    windows = []
    for index in range(count):
        kind = index % 6
        level = 10 ** (rng.uniform(-70, -6) / 20)
        if kind == 0:  # broadband noise, white or brown-ish
            signal = rng.standard_normal(max_samples)
            if index % 12 == 6:
                signal = np.cumsum(signal)
                signal -= signal.mean()
        elif kind == 1:  # a tone and its harmonics
            f0 = rng.uniform(80, 2000)
            harmonics = [k for k in range(1, 6) if f0 * k < nyquist]
            signal = np.sum([np.sin(2 * np.pi * f0 * k * t) / k for k in harmonics], axis=0)
        elif kind == 2:  # a chirp across the band
            low, high = rng.uniform(50, 500), rng.uniform(2000, min(16000, nyquist * 0.9))
            duration = max(float(t[-1]), 1e-3)
            signal = np.sin(2 * np.pi * (low * t + (high - low) * t**2 / (2 * duration)))
        elif kind == 3:  # clicks and knocks
            signal = np.zeros(max_samples)
            for at in rng.integers(0, max_samples, size=rng.integers(3, 30)):
                burst = rng.standard_normal(min(400, max_samples - at))
                signal[at : at + burst.size] += burst * np.exp(-np.arange(burst.size) / 60)
        elif kind == 4:  # noise modulated at a syllable rate, speech-like
            envelope = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(2, 6) * t))
            signal = envelope * rng.standard_normal(max_samples)
        else:  # an alarm-like beep, on and off
            gate = (np.sin(2 * np.pi * rng.uniform(1, 4) * t) > 0).astype(np.float64)
            signal = gate * np.sin(2 * np.pi * rng.uniform(2000, 4000) * t)
        signal = np.asarray(signal, dtype=np.float64)
        peak = float(np.max(np.abs(signal))) or 1.0
        floor = 10 ** (-70 / 20) * rng.standard_normal(max_samples)
        windows.append((level * signal / peak + floor).astype(np.float32))
    return windows
