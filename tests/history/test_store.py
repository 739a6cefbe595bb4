"""The history store: rows round-trip, retention by age and by size, unusable files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitor.errors import EXIT_UNAVAILABLE, HistoryError
from monitor.history.chunks import Chunk
from monitor.history.store import HistoryStore
from tests.support.history import NOW_S, T0, unit_rows, windows_of, write_history


def stored(path: Path) -> list[Chunk]:
    store = HistoryStore.open_existing(path)
    try:
        return list(store.chunks())
    finally:
        store.close()


def test_windows_round_trip_as_float16_with_times_and_levels(tmp_path: Path) -> None:
    rows = unit_rows(600, 32)
    windows = windows_of("kitchen", rows[:300]) + windows_of("porch", rows[300:])
    write_history(tmp_path / "h.sqlite3", windows, chunk_windows=128)
    chunks = stored(tmp_path / "h.sqlite3")
    assert [c.source_id for c in chunks] == ["kitchen"] * 3 + ["porch"] * 3
    assert [c.windows for c in chunks] == [128, 128, 44] * 2
    kitchen = [c for c in chunks if c.source_id == "kitchen"]
    starts = np.concatenate([c.start_s for c in kitchen])
    assert np.array_equal(starts, [w.start_time.timestamp() for w in windows[:300]])
    assert np.array_equal(
        np.concatenate([c.end_s for c in kitchen]), [w.end_time.timestamp() for w in windows[:300]]
    )
    assert np.array_equal(
        np.concatenate([c.level_dbfs for c in kitchen]), [w.level_dbfs for w in windows[:300]]
    )
    embeddings = np.concatenate([c.embeddings for c in kitchen])
    assert embeddings.dtype == np.float16
    # float16, subnormals flushed to zero (halves.to_half)
    half = rows[:300].astype(np.float16)
    normal = np.abs(half) >= np.float16(2.0**-14)
    assert np.array_equal(embeddings[normal], half[normal])
    assert not embeddings[~normal].any()


def test_flushes_top_up_the_newest_row_instead_of_adding_small_ones(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    windows = windows_of("kitchen", unit_rows(100, 8))
    from monitor.history.writer import HistoryWriter

    writer = HistoryWriter(path, chunk_windows=64, flush_seconds=0.0, clock=lambda: NOW_S)
    writer.start()
    for i in range(0, 100, 3):
        writer.submit(windows[i : i + 3])
    assert writer.stop(30.0)
    assert [c.windows for c in stored(path)] == [64, 36]
    assert writer.stats().windows_written == 100


def test_retention_by_age_deletes_what_ended_before_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    old = windows_of("kitchen", unit_rows(50, 8), start=T0)
    new = windows_of("kitchen", unit_rows(50, 8, seed=1), start=T0.replace(day=20))
    now = T0.replace(day=21).timestamp()
    write_history(path, old, chunk_windows=25, clock=lambda: now)
    write_history(path, new, chunk_windows=25, clock=lambda: now)
    # The next writer applies retention as it starts: 10 days keep the 20th, not the 1st.
    writer = write_history(path, [], max_age_days=10, clock=lambda: now)
    assert writer.stats().windows_deleted == 50
    chunks = stored(path)
    assert sum(c.windows for c in chunks) == 50
    assert min(c.start_s.min() for c in chunks) == new[0].start_time.timestamp()


def test_retention_by_size_deletes_the_oldest_of_any_source_first(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    dim = 512  # a chunk of 64 windows is 64 KB of embeddings
    write_history(path, windows_of("kitchen", unit_rows(640, dim), start=T0), chunk_windows=64)
    later = T0.replace(hour=13)
    write_history(path, windows_of("porch", unit_rows(640, dim, 1), start=later), chunk_windows=64)
    # About 1.8 MB with the schema's pages: 1.5 MB costs some of kitchen's windows only.
    writer = write_history(path, [], max_megabytes=1.5, clock=later.timestamp)
    deleted = writer.stats().windows_deleted
    store = HistoryStore.open_existing(path)
    summary = store.summary()
    store.close()
    assert summary.used_bytes <= 1_500_000
    assert 0 < deleted < 640
    # Only kitchen's (older) windows went, oldest first: what is left is the newest part.
    assert summary.windows_of["porch"] == 640
    assert summary.windows_of.get("kitchen", 0) == 640 - deleted
    assert path.stat().st_size <= 1_500_000  # freed pages given back to the file system
    kitchen = [c for c in stored(path) if c.source_id == "kitchen"]
    assert kitchen[0].start_s[0] == T0.timestamp() + deleted  # 1 s hop: the oldest went


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, bytes(range(256)) * 64])
def test_a_file_that_is_not_a_history_database_is_unusable_in_one_line(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "h.sqlite3"
    path.write_bytes(np.random.default_rng(0).bytes(8192) if content == b"" else content)
    with pytest.raises(HistoryError) as caught:
        HistoryStore.open_existing(path)
    assert caught.value.exit_code == EXIT_UNAVAILABLE
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_database_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match=r"history\.enabled"):
        HistoryStore.open_existing(tmp_path / "none.sqlite3")
