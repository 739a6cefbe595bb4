"""The daemon with history enabled keeps one window per scored window, source and times right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitor.config import Config
from monitor.history.store import HistoryStore
from monitor.service.daemon import Daemon
from monitor.service.notify import SystemdNotifier
from tests.support.audio import write_clip
from tests.support.daemons import Running
from tests.support.tiny_clap import PROJECTION_DIM

pytestmark = pytest.mark.slow

HOP_SECONDS = 0.5
WINDOW_SECONDS = 1.0


def test_every_scored_window_is_kept_with_its_source_and_times(
    tmp_path: Path, tiny_clap_dir: Path
) -> None:
    history = tmp_path / "state" / "history.sqlite3"
    sources = [
        {
            "type": "file",
            "id": id_,
            "path": str(write_clip(tmp_path / f"{id_}.wav", s, 16000, 1)),
            "realtime": False,
        }
        for id_, s in (("kitchen", 8.0), ("porch", 5.0))
    ]
    config = Config.model_validate(
        {
            "model": {"name": str(tiny_clap_dir), "torch_threads": 1},
            "sources": sources,
            "window": {"seconds": WINDOW_SECONDS, "hop_seconds": HOP_SECONDS},
            "label_sets": [{"name": "x", "labels": ["smoke alarm", "dog barking"]}],
            "history": {"enabled": True, "path": str(history)},
        }
    )
    daemon = Daemon(config, notifier=SystemdNotifier(environ={}))
    run = Running(daemon)
    run.thread.join(120)  # file sources replayed as fast as scored: the daemon ends by itself
    assert not run.thread.is_alive() and run.error is None and run.code == 0
    snapshot = daemon.snapshot()
    assert snapshot is not None
    scored = {s.source_id: s.worker.windows_scored for s in snapshot.sources}
    store = HistoryStore.open_existing(history)
    summary = store.summary()
    chunks = list(store.chunks())
    store.close()
    assert summary.windows_of == scored and min(scored.values()) > 0
    assert summary.model_id == str(tiny_clap_dir) and summary.dim == PROJECTION_DIM
    for source in scored:
        mine = [c for c in chunks if c.source_id == source]
        starts = np.concatenate([c.start_s for c in mine])
        ends = np.concatenate([c.end_s for c in mine])
        np.testing.assert_allclose(np.diff(starts), HOP_SECONDS, atol=1e-3)
        np.testing.assert_allclose(ends - starts, WINDOW_SECONDS, atol=1e-3)
        rows = np.concatenate([c.embeddings for c in mine]).astype(np.float32)
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=2e-3)
