"""float16 rows: stored without subnormals, widened to float32 exactly (scaled or not)."""

from __future__ import annotations

import numpy as np

from monitor.history.halves import to_half, widen, widen_scaled


def test_every_finite_float16_widens_exactly() -> None:
    every = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = every[np.isfinite(every)]
    out = widen(finite)
    assert out.dtype == np.float32
    assert np.array_equal(out.view(np.uint32), finite.astype(np.float32).view(np.uint32))


def test_rows_widen_into_a_reused_buffer() -> None:
    rows = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float16)
    work = np.empty(64, dtype=np.int32)
    out = widen(rows, work)
    assert out.shape == (5, 7) and np.shares_memory(out, work)
    assert np.array_equal(out, rows.astype(np.float32))


def test_scaled_widening_leaves_out_exactly_two_to_the_112() -> None:
    every = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = every[np.isfinite(every)]
    scaled = widen_scaled(finite).astype(np.float64)
    assert np.array_equal(scaled * 2.0**112, finite.astype(np.float64))


def test_rows_are_stored_without_subnormals_and_otherwise_as_float16() -> None:
    rows = np.array([[1e-3, -1e-3, 3e-5, -3e-5, 6.1e-5, 7e-5, 0.0, 0.5]], dtype=np.float32)
    half = to_half(rows)
    assert half.dtype == np.float16
    tiny = np.finfo(np.float16).smallest_normal
    assert np.array_equal(half != 0, np.abs(rows) >= tiny)
    kept = np.abs(rows) >= tiny
    assert np.array_equal(half[kept], rows[kept].astype(np.float16))
    assert np.abs(half.astype(np.float32) - rows).max() < 6.2e-5
