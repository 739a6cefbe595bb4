"""The bench's workload: windows cut every hop from one stream, as the daemon cuts them."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.bench.workload import make_workload


@pytest.mark.parametrize(("hop_seconds", "position"), [(1.0, 48000), (0.5, 24000), (0.001, None)])
def test_the_workload_is_one_stream_cut_every_hop(hop_seconds: float, position: int | None) -> None:
    workload = make_workload(None, 3, 2.0, hop_seconds)
    rate = workload.source_rate_hz
    size, step = 2 * rate, round(hop_seconds * rate)
    assert workload.hop_seconds == hop_seconds
    assert [len(w) for w in workload.windows] == [size] * 3
    # Overlapping windows hold the same stream samples where they overlap.
    np.testing.assert_array_equal(workload.windows[1][: size - step], workload.windows[0][step:])
    np.testing.assert_array_equal(workload.windows[2][: size - step], workload.windows[1][step:])
    assert workload.positions[:2] == [0, position]
