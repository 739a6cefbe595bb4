"""The history writer: the worker's callback only enqueues; a killed writer leaves a usable file."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from monitor.history.store import HistoryStore
from monitor.history.writer import HistoryWriter
from tests.support.history import NOW_S, unit_rows, windows_of
from tests.support.processes import REPO_ROOT, PipeLines


def test_a_full_queue_drops_and_counts_with_one_warning_per_episode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = HistoryWriter(tmp_path / "h.sqlite3", queue_batches=2, clock=lambda: NOW_S)
    windows = windows_of("kitchen", unit_rows(12, 8))
    caplog.set_level(logging.INFO, logger="monitor.history.writer")
    # Not started: nothing drains the queue, as when the disk stalls.
    for i in range(0, 8, 2):
        writer.submit(windows[i : i + 2])
    assert writer.stats().windows_dropped == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "behind" in warnings[0].getMessage()
    writer.start()
    assert writer.stop(10.0)  # drains the two queued batches
    writer.submit(windows[8:10])  # stopped: queued, never written
    assert writer.stats().windows_written == 4
    store = HistoryStore.open_existing(tmp_path / "h.sqlite3")
    assert store.summary().windows == 4
    store.close()


def test_submit_never_blocks_the_worker_while_a_write_is_slow(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path / "h.sqlite3", queue_batches=4, clock=lambda: NOW_S)
    held = threading.Event()
    real_write = writer.store.write

    def slow_write(*args: object) -> list[int]:
        held.wait(10.0)
        return real_write(*args)  # type: ignore[arg-type]

    writer.store.write = slow_write  # type: ignore[method-assign]
    writer.flush_seconds = 0.0
    writer.start()
    windows = windows_of("kitchen", unit_rows(40, 8))
    for i in range(0, 40, 2):
        writer.submit(windows[i : i + 2])  # returns at once: queued or dropped
    assert writer.stats().windows_dropped > 0
    held.set()
    assert writer.stop(10.0)


_CHILD = """
import sys, time
from pathlib import Path
from monitor.history.writer import HistoryWriter
from tests.support.history import NOW_S, unit_rows, windows_of

writer = HistoryWriter(Path(sys.argv[1]), flush_seconds=0.01, chunk_windows=64,
                       clock=lambda: NOW_S)
writer.start()
windows = windows_of("kitchen", unit_rows(20000, 512))
for i in range(0, len(windows), 4):
    writer.submit(windows[i : i + 4])
    if writer.stats().windows_written >= 500 and i % 400 == 0:
        print("written", writer.stats().windows_written, flush=True)
    time.sleep(0.0005)
"""


@pytest.mark.slow
def test_a_writer_killed_mid_writes_leaves_a_readable_database(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert child.stdout is not None
        lines = PipeLines(child.stdout)
        lines.wait_for(lambda line: line.startswith("written"), "writes", timeout_seconds=60)
        lines.wait_for(
            lambda line: line.startswith("written") and int(line.split()[1]) >= 2000,
            "more writes",
            timeout_seconds=60,
        )
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    store = HistoryStore.open_existing(path)
    chunks = list(store.chunks())
    summary = store.summary()
    store.close()
    assert summary.windows >= 2000
    assert sum(c.windows for c in chunks) == summary.windows
    starts = np.concatenate([c.start_s for c in chunks])
    assert np.all(np.diff(starts) == 1.0)  # consecutive windows, none lost in between
    assert all(np.isfinite(c.embeddings).all() for c in chunks)
