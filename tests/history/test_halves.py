"""widen: every finite float16 as float32, bit for bit, as numpy's own cast gives it."""

from __future__ import annotations

import numpy as np

from monitor.history.halves import widen


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
