"""Windows above a threshold, or the best peaks, merged into time ranges per source."""

from __future__ import annotations

import numpy as np

from monitor.search.ranges import above, best
from monitor.search.scan import SourceScores


def scores_of(
    source: str, values: list[float], hop: float = 1.0, length: float = 2.0
) -> SourceScores:
    starts = np.arange(len(values), dtype=np.float64) * hop + 1000.0
    return SourceScores(source, starts, starts + length, np.array(values, np.float32)[:, None])


def test_overlapping_windows_above_the_threshold_merge_per_source() -> None:
    kitchen = scores_of("kitchen", [0.1, 0.5, 0.6, 0.1, 0.1, 0.1, 0.7, 0.1])
    porch = scores_of("porch", [0.1, 0.9, 0.1])
    found = above([kitchen, porch], 0, 0.4)
    spans = [(r.source_id, r.start_s, r.end_s, r.peak_score, r.windows) for r in found]
    assert spans == [
        ("kitchen", 1001.0, 1004.0, np.float32(0.6), 2),
        ("porch", 1001.0, 1003.0, np.float32(0.9), 1),
        ("kitchen", 1006.0, 1008.0, np.float32(0.7), 1),
    ]
    assert found[0].peak_start_s == 1002.0


def test_adjacent_windows_merge_and_a_gap_splits() -> None:
    # 1 s windows every 1 s touch; a below-threshold window between leaves a 1 s gap.
    source = scores_of("k", [0.5, 0.5, 0.1, 0.5], hop=1.0, length=1.0)
    assert [(r.start_s, r.end_s) for r in above([source], 0, 0.4)] == [
        (1000.0, 1002.0),
        (1003.0, 1004.0),
    ]
    # 3 s windows every 1 s: the windows around the low one still overlap: one range.
    source = scores_of("k", [0.5, 0.5, 0.1, 0.5], hop=1.0, length=3.0)
    assert [(r.start_s, r.end_s) for r in above([source], 0, 0.4)] == [(1000.0, 1006.0)]


def test_top_ranks_ranges_by_peak_and_widens_them_with_their_neighbours() -> None:
    values = [0.1] * 100
    values[10:13] = [0.78, 0.8, 0.77]  # within 0.05 of the peak: one range
    values[50] = 0.6
    values[80] = 0.7
    found = best([scores_of("k", values)], 0, 2)
    assert [(r.peak_score, r.peak_start_s) for r in found] == [
        (np.float32(0.8), 1011.0),
        (np.float32(0.7), 1080.0),
    ]
    assert (found[0].start_s, found[0].end_s, found[0].windows) == (1010.0, 1014.0, 3)
    assert (found[1].start_s, found[1].end_s, found[1].windows) == (1080.0, 1082.0, 1)


def test_top_peaks_of_several_sources_compete() -> None:
    kitchen = scores_of("kitchen", [0.1, 0.3, 0.1])
    porch = scores_of("porch", [0.2, 0.1, 0.4])
    found = best([kitchen, porch], 0, 3)
    assert [(r.source_id, r.peak_score) for r in found] == [
        ("porch", np.float32(0.4)),
        ("kitchen", np.float32(0.3)),
        ("porch", np.float32(0.2)),
    ]


def test_nothing_to_rank_is_no_match() -> None:
    assert best([], 0, 3) == [] and above([], 0, 0.5) == []
