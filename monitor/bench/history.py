"""`bench --history-days`: days of random unit embeddings through the real history writer, then
the real search path timed over them."""

from __future__ import annotations

import os
import statistics
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from monitor.bench.environment import load_average
from monitor.bench.results import HistoryBenchReport
from monitor.frames import WindowEmbedding
from monitor.history.writer import FLUSH_SECONDS, HistoryWriter
from monitor.model.cpu import cpu_info
from monitor.pipeline.scoring import LabelSetScorer
from monitor.search.parallel import default_jobs, scan_history
from monitor.search.ranges import best
from monitor.search.results import DEFAULT_TOP
from monitor.search.scan import text_scorer

SEARCH_TARGET_SECONDS = 0.5  # 7 days of one source at a 1 s hop
MEGABYTES_TARGET = 100.0  # per source per day
WINDOW_SECONDS = 10.0
HOP_SECONDS = 1.0
DIM = 512  # laion/clap-htsat-unfused
WORKER_BATCH = 4  # the daemon's default model.max_batch
GENERATE_ROWS = 8192
MAX_QUEUED_BATCHES = 64
START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def run_history_bench(days: float, work: Path, runs: int = 5) -> HistoryBenchReport:
    """Fill `work`/history.sqlite3 with `days` of one source, then search it `runs` times."""
    path = work / "history.sqlite3"
    windows = round(days * 86400 / HOP_SECONDS)
    # The daemon flushes every FLUSH_SECONDS: at a 1 s hop, that many windows per source.
    flush_windows = round(FLUSH_SECONDS / HOP_SECONDS)
    end_s = (START + timedelta(seconds=windows * HOP_SECONDS)).timestamp()
    writer = HistoryWriter(
        path,
        model_id="bench (random unit embeddings)",
        max_age_days=days + 1,
        max_megabytes=1e9,
        flush_seconds=0.0,  # every hand-over is flushed: each carries flush_windows windows
        clock=lambda: end_s,
    )
    writer.start()
    submit_seconds = 0.0
    submits = 0
    rng = np.random.default_rng(0)
    for first in range(0, windows, GENERATE_ROWS):
        rows = rng.standard_normal((min(GENERATE_ROWS, windows - first), DIM), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        items = [_window(first + i, row) for i, row in enumerate(rows)]
        for at in range(0, len(items), flush_windows):
            while writer.queued_batches >= MAX_QUEUED_BATCHES:
                time.sleep(0.001)
            started = time.perf_counter()
            writer.submit(items[at : at + flush_windows])
            submit_seconds += time.perf_counter() - started
            submits += 1
    writer.stop(600.0)
    stats = writer.stats()
    if stats.error is not None or stats.windows_written != windows:
        raise RuntimeError(f"history writer: {stats}")
    size_mb = os.path.getsize(path) / 1e6
    text = rng.standard_normal((1, DIM)).astype(np.float32)
    text /= np.linalg.norm(text)
    scorer = text_scorer(("bench",), text, False, 1.0)
    jobs = default_jobs()
    timings: list[float] = []
    serial: list[float] = []
    # Alternated, so that both see the same machine: the serial scan is the reference.
    for _ in range(runs):
        timings.append(_timed_search(path, scorer, jobs))
        serial.append(_timed_search(path, scorer, 1) if jobs > 1 else timings[-1])
    return HistoryBenchReport(
        cpu_model=cpu_info().model,
        cpu_count=os.cpu_count(),
        days=days,
        sources=1,
        windows=windows,
        dim=DIM,
        hop_seconds=HOP_SECONDS,
        flush_windows=flush_windows,
        file_megabytes=round(size_mb, 1),
        megabytes_per_source_day=round(size_mb / days, 1),
        insert_ms_per_window=stats.write_seconds * 1000 / windows,
        submit_us_per_batch=submit_seconds * 1e6 / submits * WORKER_BATCH / flush_windows,
        search_jobs=jobs,
        search_seconds=tuple(round(t, 3) for t in timings),
        search_median_seconds=round(statistics.median(timings), 3),
        search_serial_seconds=tuple(round(t, 3) for t in serial),
        search_serial_median_seconds=round(statistics.median(serial), 3),
        search_target_seconds=SEARCH_TARGET_SECONDS,
        megabytes_target=MEGABYTES_TARGET,
        load_average_after=load_average(),
    )


def _timed_search(path: Path, scorer: LabelSetScorer, jobs: int) -> float:
    """Seconds for what `audio-monitor search` times: every window scored, the top 10 ranked."""
    started = time.perf_counter()
    best(scan_history(path, scorer, jobs=jobs), 0, DEFAULT_TOP)
    return time.perf_counter() - started


def _window(index: int, row: np.ndarray) -> WindowEmbedding:
    start = START + timedelta(seconds=index * HOP_SECONDS)
    return WindowEmbedding("bench", start, start + timedelta(seconds=WINDOW_SECONDS), -30.0, row)
