"""The change gate: quiet steady audio skips the model; every window holding an onset is scored."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.bench.workload import quiet_home
from monitor.config.window import ChangeGateConfig
from monitor.frames import Window
from monitor.pipeline.gate import ChangeGate, band_profile_db
from tests.support.streams import windows_of

RATE_HZ = 16000
WINDOW_SECONDS, HOP_SECONDS = 5.0, 1.0


def scored(windows: list[Window], cfg: ChangeGateConfig | None = None) -> list[bool]:
    gate = ChangeGate(cfg or ChangeGateConfig(enabled=True))
    return [gate.needs_model(w, w.samples) for w in windows]


def overlaps(window: Window, start_seconds: float, length_seconds: float) -> bool:
    start, end = window.start_index / RATE_HZ, window.end_index / RATE_HZ
    return start < start_seconds + length_seconds and end > start_seconds


def test_a_short_loud_sound_moves_the_power_mean_of_its_bands() -> None:
    quiet = quiet_home(48000, 1.0, [])
    knock = quiet_home(48000, 1.0, [(0.5, 0.1, -30.0)])
    change = band_profile_db(knock, 48000) - band_profile_db(quiet, 48000)
    assert change.max() > 15.0  # 0.1 s at 20 dB over the floor: +10 dB at least where it is
    assert (
        np.abs(
            band_profile_db(quiet_home(48000, 1.0, [], seed=4), 48000)
            - band_profile_db(quiet, 48000)
        ).max()
        < 3.0
    )


@pytest.mark.parametrize(
    ("onset", "length", "level"),
    [(30.0, 0.3, -20.0), (17.45, 0.05, -25.0), (41.9, 2.0, -38.0), (12.0, 0.5, -44.0)],
)
def test_every_window_overlapping_an_onset_is_scored(
    onset: float, length: float, level: float
) -> None:
    signal = quiet_home(RATE_HZ, 60.0, [(onset, length, level)])
    windows = windows_of(signal, RATE_HZ, WINDOW_SECONDS, HOP_SECONDS)
    decisions = scored(windows)
    holding = [d for w, d in zip(windows, decisions, strict=True) if overlaps(w, onset, length)]
    assert len(holding) >= 5 and all(holding)
    # The steady rest mostly skips the model.
    assert decisions.count(False) >= len(windows) // 2, decisions


def test_steady_noise_is_scored_once_then_every_max_skip_seconds() -> None:
    windows = windows_of(quiet_home(RATE_HZ, 60.0, []), RATE_HZ, WINDOW_SECONDS, HOP_SECONDS)
    decisions = scored(windows, ChangeGateConfig(enabled=True, max_skip_seconds=20.0))
    ends = [w.end_index / RATE_HZ for w, d in zip(windows, decisions, strict=True) if d]
    assert ends == [5.0, 25.0, 45.0]


def test_a_change_in_level_alone_is_a_change() -> None:
    signal = quiet_home(RATE_HZ, 40.0, [])
    signal[round(20.0 * RATE_HZ) :] *= 10 ** (10 / 20)  # the floor rises by 10 dB and stays
    windows = windows_of(signal, RATE_HZ, WINDOW_SECONDS, HOP_SECONDS)
    decisions = scored(windows)
    after = [d for w, d in zip(windows, decisions, strict=True) if overlaps(w, 20.0, 0.001)]
    assert all(after)
    # Once no window holds the step any more, the new floor is steady: gated again.
    assert decisions[-1] is False
