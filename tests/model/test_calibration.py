"""The generated calibration windows: reproducible, full length, from a quiet room to loud."""

from __future__ import annotations

import numpy as np

from monitor.model.auto import TIMED_WINDOWS, WARM_UP_WINDOWS, probe_windows
from monitor.model.calibration import calibration_windows


def test_windows_are_reproducible_full_length_and_span_quiet_to_loud() -> None:
    windows = calibration_windows(48000, 480000)
    again = calibration_windows(48000, 480000)
    assert len(windows) == 16
    assert all(w.dtype == np.float32 and w.shape == (480000,) for w in windows)
    assert all(np.array_equal(a, b) for a, b in zip(windows, again, strict=True))
    assert all(np.isfinite(w).all() for w in windows)
    peaks_db = [20 * np.log10(np.abs(w).max()) for w in windows]
    assert min(peaks_db) < -40 and max(peaks_db) > -20  # both ends of the range are there
    assert max(peaks_db) <= -5.9
    # Not one kind of sound sixteen times: the spectra differ.
    centroids = []
    for w in windows:
        spectrum = np.abs(np.fft.rfft(w[:48000]))
        centroids.append(float((spectrum * np.arange(spectrum.size)).sum() / spectrum.sum()))
    assert max(centroids) > 3 * min(centroids)


def test_precision_auto_checks_agreement_on_windows_the_calibration_never_saw() -> None:
    probes = probe_windows(48000, 480000, WARM_UP_WINDOWS + TIMED_WINDOWS)
    calibration = calibration_windows(48000, 480000)
    assert len(probes) == 6  # one of each kind
    assert all(not np.array_equal(p, c) for p in probes for c in calibration)
    again = probe_windows(48000, 480000, 6)
    assert all(np.array_equal(a, b) for a, b in zip(probes, again, strict=True))
