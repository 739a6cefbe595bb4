"""Overlapping windows of one continuous stream, cut and resampled as the daemon cuts them."""

from __future__ import annotations

import numpy as np

from monitor.audio.ringbuffer import RingBuffer
from monitor.audio.windowing import Windower
from monitor.frames import Window


def stream_audio(rate_hz: int, seconds: float, seed: int = 9) -> np.ndarray:
    """Broadband noise, a tone and a chirp: energy in every mel band the source rate allows."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate_hz)) / rate_hz
    chirp = np.sin(2 * np.pi * (200 * t + 150 * t**2))
    signal = 0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * 700 * t) + 0.1 * chirp
    out: np.ndarray = signal.astype(np.float32)
    return out


def stream_windows(
    rate_hz: int, seconds: float, hop_seconds: float = 1.0, window_seconds: float = 10.0
) -> list[Window]:
    """Every window of `seconds` of stream_audio, cut and resampled one by one by the Windower."""
    ring = RingBuffer(round(rate_hz * (seconds + 1)), 1, rate_hz)
    ring.write(stream_audio(rate_hz, seconds)[:, None], wall_time_end=1_000_000.0)
    windower = Windower(ring, "src", window_seconds, hop_seconds, catch_up=True)
    windows = []
    while (window := windower.next_window(0)) is not None:
        windows.append(window)
    return windows


def windows_of(
    signal: np.ndarray, rate_hz: int, window_seconds: float, hop_seconds: float
) -> list[Window]:
    """Every window the daemon's Windower cuts from `signal` (mono, float32), in order."""
    ring = RingBuffer(len(signal) + rate_hz, 1, rate_hz)
    ring.write(signal.astype(np.float32)[:, None], wall_time_end=1_000_000.0)
    windower = Windower(ring, "src", window_seconds, hop_seconds, catch_up=True)
    windows = []
    while (window := windower.next_window(0)) is not None:
        windows.append(window)
    return windows
