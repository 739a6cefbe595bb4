"""The history writer thread: embeddings queued by the worker, appended in batched transactions."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from monitor.errors import MonitorError
from monitor.frames import WindowEmbedding
from monitor.history.chunks import Chunk
from monitor.history.store import HistoryStore

logger = logging.getLogger(__name__)

CHUNK_WINDOWS = 256  # windows per row: few rows to read per search, one blob of 256 KB each
FLUSH_SECONDS = 60.0  # the most a killed process loses (besides the queue)
QUEUE_BATCHES = 1024  # worker batches waiting; over an hour at a 4 s hop and batch 1
RETENTION_SECONDS = 600.0
SECONDS_PER_DAY = 86400.0
BYTES_PER_MEGABYTE = 1_000_000

_STOP = object()


@dataclass(frozen=True)
class WriterStats:
    """What the writer has done so far."""

    windows_written: int
    windows_dropped: int  # queue full: the writer fell behind
    windows_deleted: int  # by retention
    write_seconds: float  # time spent in write transactions
    error: str | None


class HistoryWriter(threading.Thread):
    """Appends every window handed to `submit` to the history database.

    `submit` runs on the scoring worker's thread and only enqueues (bounded; when full, the
    batch is dropped and counted, with one warning per episode). This thread keeps each
    source's windows in memory and writes them every FLUSH_SECONDS (and at stop) in one
    transaction, topping up each source's newest row to CHUNK_WINDOWS windows before starting
    another; retention by age and size runs every RETENTION_SECONDS.
    """

    def __init__(
        self,
        path: Path,
        *,
        model_id: str = "",
        max_age_days: float = 30.0,
        max_megabytes: float = 2000.0,
        flush_seconds: float = FLUSH_SECONDS,
        retention_seconds: float = RETENTION_SECONDS,
        queue_batches: int = QUEUE_BATCHES,
        chunk_windows: int = CHUNK_WINDOWS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name="history-writer", daemon=True)
        # Opened here: a bad path fails the build, before the model loads.
        self.store = HistoryStore.create(path, model_id)
        self.path = path
        self.max_age_seconds = max_age_days * SECONDS_PER_DAY
        self.max_bytes = int(max_megabytes * BYTES_PER_MEGABYTE)
        self.flush_seconds = flush_seconds
        self.retention_seconds = retention_seconds
        self.chunk_windows = chunk_windows
        self._clock = clock
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_batches)
        self._pending: dict[str, list[WindowEmbedding]] = {}
        self._open: dict[str, tuple[int, Chunk]] = {}  # source -> its newest, unfilled row
        self._dropping = False  # touched by the submitting thread only
        self._written = 0
        self._dropped = 0
        self._deleted = 0
        self._write_seconds = 0.0
        self.error: BaseException | None = None

    def submit(self, embeddings: Sequence[WindowEmbedding]) -> None:
        """Queue one batch (the worker's on_embeddings); never blocks."""
        if not embeddings:
            return
        try:
            self._queue.put_nowait(tuple(embeddings))
        except queue.Full:
            self._dropped += len(embeddings)
            if not self._dropping:
                self._dropping = True
                logger.warning(
                    "history writer is behind (%d batches queued): windows are not kept "
                    "until it catches up",
                    self._queue.maxsize,
                )
            return
        if self._dropping:
            self._dropping = False
            logger.info("history writer caught up; %d window(s) dropped so far", self._dropped)

    @property
    def queued_batches(self) -> int:
        """Batches waiting for this thread (a producer may pace itself on it)."""
        return self._queue.qsize()

    def stats(self) -> WriterStats:
        return WriterStats(
            self._written,
            self._dropped,
            self._deleted,
            self._write_seconds,
            None if self.error is None else str(self.error),
        )

    def stop(self, timeout_seconds: float) -> bool:
        """Write what is queued and close; True when done within the timeout."""
        if not self.is_alive():
            return True
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                self._queue.put(_STOP, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    logger.warning("history writer still behind at shutdown; its queue is lost")
                    return False
        self.join(max(0.0, deadline - time.monotonic()))
        if self.is_alive():
            logger.warning("history writer did not finish within %.1f s", timeout_seconds)
            return False
        return True

    def run(self) -> None:
        try:
            self._loop()
        except MonitorError as err:
            self.error = err
            logger.error("history writer stopped: %s", err)
        finally:
            self.store.close()

    def _loop(self) -> None:
        next_retention = time.monotonic()
        next_flush = time.monotonic() + self.flush_seconds
        while True:
            now = time.monotonic()
            if now >= next_retention:
                self._retain()
                next_retention = time.monotonic() + self.retention_seconds
            try:
                item = self._queue.get(timeout=max(0.0, min(next_flush, next_retention) - now))
            except queue.Empty:
                item = None
            if item is _STOP:
                self._flush()
                return
            if isinstance(item, tuple):
                for embedding in item:
                    self._pending.setdefault(embedding.source_id, []).append(embedding)
            if time.monotonic() >= next_flush:
                self._flush()
                next_flush = time.monotonic() + self.flush_seconds

    def _flush(self) -> None:
        """Every source's pending windows in one transaction."""
        if not self._pending:
            return
        started = time.perf_counter()
        writes: list[tuple[int | None, Chunk]] = []
        count = 0
        for source, items in self._pending.items():
            count += len(items)
            chunk = Chunk.of(source, items)
            opened = self._open.pop(source, None)
            if opened is not None:
                chunk = opened[1] + chunk
            for index, piece in enumerate(chunk.split(self.chunk_windows)):
                writes.append((opened[0] if opened is not None and index == 0 else None, piece))
        ids = self.store.write(writes)
        for (_old, piece), row_id in zip(writes, ids, strict=True):
            if piece.windows < self.chunk_windows:  # topped up at the next flush
                self._open[piece.source_id] = (row_id, piece)
        self._pending = {}
        self._written += count
        self._write_seconds += time.perf_counter() - started

    def _retain(self) -> None:
        deleted = self.store.apply_retention(self._clock() - self.max_age_seconds, self.max_bytes)
        if deleted:
            # An unfilled row may be gone: the next windows start new rows.
            self._open.clear()
            self._deleted += deleted
            logger.info("history: %d old window(s) deleted (age or size limit)", deleted)
