"""scan_history: the same scores, in the same order, from one process or several."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from monitor.history.store import HistoryStore
from monitor.search import parallel
from monitor.search.parallel import scan_history
from monitor.search.scan import SourceScores, score_chunks, text_scorer
from tests.support.history import T0, unit_rows, windows_of, write_history

DIM = 16
SHARE = 8  # rows per process: the fixture's 113 rows are shared by up to 3


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sources of 1,200 and 600 windows in rows of 16: 113 rows, enough to share."""
    path = tmp_path_factory.mktemp("history") / "history.sqlite3"
    kitchen = windows_of("kitchen", unit_rows(1200, DIM, 1), hop_seconds=1.0)
    porch = windows_of("porch", unit_rows(600, DIM, 2), hop_seconds=2.0)
    write_history(path, kitchen + porch, chunk_windows=16)
    return path


def texts() -> np.ndarray:
    return unit_rows(3, DIM, 9)


def serial(
    path: Path,
    since_s: float | None = None,
    until_s: float | None = None,
    source: str | None = None,
) -> list[SourceScores]:
    store = HistoryStore.open_existing(path)
    try:
        scorer = text_scorer(("a", "b", "c"), texts(), False, 1.0)
        return score_chunks(store.chunks(since_s, until_s, source), scorer, since_s, until_s)
    finally:
        store.close()


def assert_same(got: list[SourceScores], want: list[SourceScores]) -> None:
    assert [s.source_id for s in got] == [s.source_id for s in want]
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g.start_s, w.start_s)
        assert np.array_equal(g.end_s, w.end_s)
        assert np.array_equal(g.scores, w.scores)


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_every_window_is_scored_once_in_time_order_whatever_the_processes(
    history: Path, jobs: int
) -> None:
    scorer = text_scorer(("a", "b", "c"), texts(), False, 1.0)
    got = scan_history(history, scorer, jobs=jobs, min_chunks_per_job=SHARE)
    assert [s.windows for s in got] == [1200, 600]
    assert all(np.all(np.diff(s.start_s) > 0) for s in got)
    assert_same(got, serial(history))


def test_a_range_cut_inside_rows_and_a_source_filter_give_the_serial_scan_s_windows(
    history: Path,
) -> None:
    since = T0.timestamp() + 100.5  # inside a row of 16 windows
    until = T0.timestamp() + 1000.5
    scorer = text_scorer(("a", "b", "c"), texts(), False, 1.0)
    got = scan_history(history, scorer, since, until, jobs=2, min_chunks_per_job=SHARE)
    kitchen = got[0]
    assert kitchen.start_s[0] == since + 0.5 and kitchen.start_s[-1] == until - 0.5
    assert_same(got, serial(history, since_s=since, until_s=until))
    porch = scan_history(history, scorer, since, until, "porch", 2, SHARE)
    assert_same(porch, serial(history, since_s=since, until_s=until, source="porch"))


def test_softmax_scores_are_computed_over_the_merged_windows(history: Path) -> None:
    scorer = text_scorer(("a", "b", "c"), texts(), True, 100.0)
    got = scan_history(history, scorer, jobs=2, min_chunks_per_job=SHARE)
    assert all(np.allclose(s.scores.sum(axis=1), 1.0, atol=1e-5) for s in got)
    store = HistoryStore.open_existing(history)
    try:
        want = score_chunks(store.chunks(), scorer)
    finally:
        store.close()
    assert_same(got, want)


def test_spans_share_the_rows_evenly_and_cover_every_start() -> None:
    starts = np.arange(1000, dtype=np.float64)
    spans = parallel._spans(starts, 4, 100)
    assert len(spans) == 4
    assert spans[0][0] == -np.inf and spans[-1][1] == np.inf
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    counts = [np.count_nonzero((starts >= lo) & (starts < hi)) for lo, hi in spans]
    assert counts == [250, 250, 250, 250]


def test_a_small_range_is_scanned_in_this_process() -> None:
    few = np.arange(parallel.MIN_CHUNKS_PER_JOB * 2 - 1, dtype=np.float64)
    assert parallel._spans(few, 4) == [(-np.inf, np.inf)]
    assert len(parallel._spans(np.arange(parallel.MIN_CHUNKS_PER_JOB * 2.0), 4)) == 2
    assert parallel._spans(np.arange(1000, dtype=np.float64), 1) == [(-np.inf, np.inf)]
