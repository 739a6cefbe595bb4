"""A history scan split by time over forked worker processes, each with its own connection."""

from __future__ import annotations

import itertools
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from monitor.errors import HistoryError
from monitor.history.store import HistoryStore
from monitor.pipeline.scoring import LabelSetScorer
from monitor.search.scan import (
    SourceCosines,
    SourceScores,
    cosines_of,
    merged,
    scaled_prompts,
    score_chunks,
    scores_of,
)

# Rows (256 windows each) a process must get to be worth its fork, start-up and hand-back
# (docs/PERFORMANCE.md: two processes on 2 quiet cores break even near 340 rows, and on busy
# ones not before 2,000: 256 each keeps short searches in one process).
MIN_CHUNKS_PER_JOB = 256
# Beyond a few cores the scan waits on memory, not on arithmetic.
MAX_JOBS = 4


def default_jobs() -> int:
    """The CPUs this process may run on, at most MAX_JOBS."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return max(1, min(usable, MAX_JOBS))


def scan_history(
    path: Path,
    scorer: LabelSetScorer,
    since_s: float | None = None,
    until_s: float | None = None,
    source: str | None = None,
    jobs: int = 1,
    min_chunks_per_job: int = MIN_CHUNKS_PER_JOB,
) -> list[SourceScores]:
    """Every stored window (of `source`) starting within [since_s, until_s], scored as the
    daemon scores them, by source then time; in `jobs` processes when the range is large.

    The scan is one serial pass of memory-bound numpy calls on each 256-window row, and the
    GIL is held between them: threads do not overlap it, processes do (docs/PERFORMANCE.md)."""
    store = HistoryStore.open_existing(path)
    try:
        spans = _spans(store.chunk_starts(since_s, until_s, source), jobs, min_chunks_per_job)
        if len(spans) == 1:
            return score_chunks(store.chunks(since_s, until_s, source), scorer, since_s, until_s)
    finally:
        store.close()
    prompts = scaled_prompts(scorer)
    # Forked, the workers start in milliseconds with numpy loaded; spawned, each would import
    # it again (about 0.2 s, most of what they save).
    context = multiprocessing.get_context("fork")
    try:
        with ProcessPoolExecutor(len(spans), mp_context=context) as pool:
            futures = [
                pool.submit(_scan_span, path, prompts, since_s, until_s, source, span)
                for span in spans
            ]
            pieces = [f.result() for f in futures]
    except BrokenProcessPool as err:
        raise HistoryError(f"history {path}: a scanning process died: {err}") from err
    return scores_of(merged(pieces), scorer)


def _spans(
    first_starts: np.ndarray, jobs: int, min_chunks_per_job: int = MIN_CHUNKS_PER_JOB
) -> list[tuple[float, float]]:
    """Consecutive [from, to) spans of chunk start times, about equal in chunks, one per job;
    one span when the range is too small to share or the platform cannot fork."""
    jobs = min(jobs, first_starts.size // max(1, min_chunks_per_job))
    if jobs <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [(-np.inf, np.inf)]
    cuts = np.unique(first_starts[np.linspace(0, first_starts.size, jobs + 1).astype(int)[1:-1]])
    bounds = [-np.inf, *(float(c) for c in cuts), np.inf]
    return list(itertools.pairwise(bounds))


def _scan_span(
    path: Path,
    prompts: np.ndarray,
    since_s: float | None,
    until_s: float | None,
    source: str | None,
    span: tuple[float, float],
) -> list[SourceCosines]:
    store = HistoryStore.open_existing(path)
    try:
        return cosines_of(store.chunks(since_s, until_s, source, span), prompts, since_s, until_s)
    finally:
        store.close()
