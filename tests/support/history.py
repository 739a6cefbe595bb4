"""History databases filled through the real writer with random unit embeddings."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from monitor.frames import WindowEmbedding
from monitor.history.writer import HistoryWriter

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
NOW_S = (T0 + timedelta(days=1)).timestamp()  # the writers' clock: retention keeps T0's windows


def unit_rows(count: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((count, dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def windows_of(
    source_id: str,
    embeddings: np.ndarray,
    start: datetime = T0,
    hop_seconds: float = 1.0,
    window_seconds: float = 2.0,
) -> list[WindowEmbedding]:
    """One window per row, `hop_seconds` apart from `start`."""
    out = []
    for index, row in enumerate(embeddings):
        begin = start + timedelta(seconds=index * hop_seconds)
        out.append(
            WindowEmbedding(
                source_id,
                begin,
                begin + timedelta(seconds=window_seconds),
                -20.0 - index % 7,
                row,
            )
        )
    return out


def write_history(
    path: Path, windows: list[WindowEmbedding], batch: int = 4, **kw: object
) -> HistoryWriter:
    """Every window through a started writer, a worker-sized batch at a time; stopped. The
    writer's clock says NOW_S unless `clock` is given."""
    kw.setdefault("clock", lambda: NOW_S)
    writer = HistoryWriter(path, **kw)  # type: ignore[arg-type]
    writer.start()
    for i in range(0, len(windows), batch):
        writer.submit(windows[i : i + batch])
    assert writer.stop(30.0)
    assert writer.error is None
    return writer
