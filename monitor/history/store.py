"""The history database: the only module that imports sqlite3 (schema, writes, retention, reads)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.errors import HistoryError, first_line
from monitor.history.chunks import Chunk

logger = logging.getLogger(__name__)

FORMAT = "1"  # bump when the schema or the meaning of a column changes
# Large pages: a chunk's embedding blob spans a few pages instead of a chain of 60 (reading
# them is most of a search; docs/PERFORMANCE.md).
PAGE_SIZE_BYTES = 65536
BUSY_TIMEOUT_SECONDS = 5.0
MMAP_BYTES = 2**31 - 2**16  # SQLite's default compiled maximum, about 2 GB

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # One row per source per run of up to CHUNK_WINDOWS consecutive windows; the big blob
    # last, so the small columns are read without walking its overflow pages.
    """CREATE TABLE IF NOT EXISTS chunks (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        start_s REAL NOT NULL,
        end_s REAL NOT NULL,
        windows INTEGER NOT NULL,
        dim INTEGER NOT NULL,
        starts BLOB NOT NULL,
        ends BLOB NOT NULL,
        levels BLOB NOT NULL,
        embeddings BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS chunks_source_start ON chunks (source, start_s)",
    "CREATE INDEX IF NOT EXISTS chunks_start ON chunks (start_s)",
)


@dataclass(frozen=True)
class StoreSummary:
    """What a database holds: windows per source and the time span."""

    windows_of: dict[str, int]
    first_s: float | None
    last_s: float | None
    dim: int | None
    model_id: str | None
    used_bytes: int

    @property
    def windows(self) -> int:
        return sum(self.windows_of.values())


class HistoryStore:
    """One connection to the history file, used by one thread at a time."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection

    @classmethod
    def create(cls, path: Path, model_id: str = "") -> HistoryStore:
        """Open (making it and its directory if needed) for writing: WAL, synchronous=NORMAL."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS
            )
            # page_size and auto_vacuum only take effect on a new file, before the first table.
            db.execute(f"PRAGMA page_size={PAGE_SIZE_BYTES}")
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            # A power cut may lose the last transactions, never corrupt the file (WAL).
            db.execute("PRAGMA synchronous=NORMAL")
            with _transaction(db):
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
                if model_id:
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('model', ?)", (model_id,))
            store = cls(path, db)
            store._check_format()
        except (sqlite3.Error, OSError) as err:
            raise HistoryError(f"history database {path}: {first_line(err)}") from err
        return store

    @classmethod
    def open_existing(cls, path: Path) -> HistoryStore:
        """Open for reading; HistoryError when it is missing, not a database or another format."""
        if not path.is_file():
            raise HistoryError(
                f"no history database at {path}: set history.enabled in the config and run "
                "the monitor, or give --history"
            )
        try:
            db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_SECONDS)
            db.execute("PRAGMA query_only=ON")
            # Mapped, a row's pages are read without a copy into SQLite's page cache (0.15 ->
            # 0.12 s for 7 days of one source); SQLite caps it at its compiled maximum.
            db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
            store = cls(path, db)
            store._check_format()
        except sqlite3.Error as err:
            raise HistoryError(f"history database {path} is unusable: {first_line(err)}") from err
        return store

    def _check_format(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        if row is None or row[0] != FORMAT:
            found = "none" if row is None else repr(row[0])
            raise sqlite3.DatabaseError(f"format {found}, expected {FORMAT!r}")

    def close(self) -> None:
        self._db.close()

    # --- writing (the writer thread) ---

    def write(self, chunks: Sequence[tuple[int | None, Chunk]]) -> list[int]:
        """In one transaction, each chunk rewrites its row (an id) or is a new row (None; also
        when its row was deleted meanwhile); the id of each row written, in order."""
        try:
            with _transaction(self._db):
                return [self._write_one(row_id, chunk) for row_id, chunk in chunks]
        except sqlite3.Error as err:
            raise HistoryError(f"history database {self.path}: {first_line(err)}") from err

    def _write_one(self, row_id: int | None, chunk: Chunk) -> int:
        if row_id is not None:
            cursor = self._db.execute(
                "UPDATE chunks SET source=?, start_s=?, end_s=?, windows=?, dim=?, "
                "starts=?, ends=?, levels=?, embeddings=? WHERE id=?",
                (*_columns(chunk), row_id),
            )
            if cursor.rowcount:
                return row_id
        return self._insert(chunk)

    def _insert(self, chunk: Chunk) -> int:
        cursor = self._db.execute(
            "INSERT INTO chunks (source, start_s, end_s, windows, dim, starts, ends, levels, "
            "embeddings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _columns(chunk),
        )
        return int(cursor.lastrowid or 0)

    def used_bytes(self) -> int:
        """Bytes of the pages in use (the file can be larger until pages are given back)."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self._db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def apply_retention(self, oldest_kept_s: float, max_bytes: int) -> int:
        """Delete chunks that ended before `oldest_kept_s`, then the oldest chunks (of any
        source) until the pages in use fit `max_bytes`; give freed pages back. Windows deleted."""
        try:
            deleted = 0
            with _transaction(self._db):
                row = self._db.execute(
                    "SELECT COALESCE(SUM(windows), 0) FROM chunks WHERE end_s < ?",
                    (oldest_kept_s,),
                ).fetchone()
                deleted += int(row[0])
                self._db.execute("DELETE FROM chunks WHERE end_s < ?", (oldest_kept_s,))
                deleted += self._shrink_to(max_bytes)
            if deleted:
                # Each step gives one page back; execute() would step once, a script runs
                # every statement to its end.
                self._db.executescript("PRAGMA incremental_vacuum;")
            return deleted
        except sqlite3.Error as err:
            raise HistoryError(f"history database {self.path}: {first_line(err)}") from err

    def _shrink_to(self, max_bytes: int) -> int:
        """Delete the oldest chunks until the pages in use fit; windows deleted. Each round
        deletes about the excess by blob sizes, then measures the pages again."""
        deleted = 0
        while (excess := self.used_bytes() - max_bytes) > 0:
            rows = self._db.execute(
                "SELECT id, windows, length(embeddings) + length(starts) + length(ends) + "
                "length(levels) FROM chunks ORDER BY start_s LIMIT 1000"
            ).fetchall()
            if not rows:
                break
            doomed: list[tuple[int]] = []
            freed = 0
            for row_id, windows, size in rows:
                doomed.append((row_id,))
                freed += size
                deleted += windows
                if freed >= excess:
                    break
            self._db.executemany("DELETE FROM chunks WHERE id = ?", doomed)
        return deleted

    # --- reading (search) ---

    def summary(self) -> StoreSummary:
        """Windows per source, the time span, the embedding size and model of what is stored."""
        try:
            rows = self._db.execute(
                "SELECT source, SUM(windows), MIN(start_s), MAX(end_s), MAX(dim) FROM chunks "
                "GROUP BY source"
            ).fetchall()
            model = self._db.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()
            used = self.used_bytes()
        except sqlite3.Error as err:
            raise HistoryError(
                f"history database {self.path} is unusable: {first_line(err)}"
            ) from err
        return StoreSummary(
            windows_of={r[0]: int(r[1]) for r in rows},
            first_s=min((r[2] for r in rows), default=None),
            last_s=max((r[3] for r in rows), default=None),
            dim=max((int(r[4]) for r in rows), default=None),
            model_id=None if model is None else str(model[0]),
            used_bytes=used,
        )

    def chunk_starts(
        self, since_s: float | None = None, until_s: float | None = None, source: str | None = None
    ) -> np.ndarray:
        """The first window start of every chunk `chunks` would give, ascending (float64)."""
        where, params = _range_filter(since_s, until_s, source)
        query = f"SELECT start_s FROM chunks WHERE {' AND '.join(where)} ORDER BY start_s"
        try:
            return np.array([r[0] for r in self._db.execute(query, params)], dtype=np.float64)
        except sqlite3.Error as err:
            raise HistoryError(
                f"history database {self.path} is unusable: {first_line(err)}"
            ) from err

    def chunks(
        self,
        since_s: float | None = None,
        until_s: float | None = None,
        source: str | None = None,
        first_starts: tuple[float, float] | None = None,
    ) -> Iterator[Chunk]:
        """Every chunk with a window in [since_s, until_s] (of `source`; whose first window
        starts in [first_starts[0], first_starts[1]) when given), by source then time.

        The arrays are read-only views of the stored bytes; a chunk can hold windows outside
        the range (the caller filters them)."""
        where, params = _range_filter(since_s, until_s, source)
        if first_starts is not None:
            where += ["start_s >= ?", "start_s < ?"]
            params += [first_starts[0], first_starts[1]]
        # The index gives the rows in order: left to choose, the planner can prefer the
        # start index and sort every matching row, blobs and all, in a temporary b-tree.
        query = (
            "SELECT source, windows, dim, starts, ends, levels, embeddings FROM chunks "
            f"INDEXED BY chunks_source_start WHERE {' AND '.join(where)} ORDER BY source, start_s"
        )
        try:
            for src, windows, dim, starts, ends, levels, embeddings in self._db.execute(
                query, params
            ):
                yield Chunk(
                    src,
                    np.frombuffer(starts, dtype=np.float64),
                    np.frombuffer(ends, dtype=np.float64),
                    np.frombuffer(levels, dtype=np.float32),
                    np.frombuffer(embeddings, dtype=np.float16).reshape(windows, dim),
                )
        except (sqlite3.Error, ValueError) as err:
            raise HistoryError(
                f"history database {self.path} is unusable: {first_line(err)}"
            ) from err


def _range_filter(
    since_s: float | None, until_s: float | None, source: str | None
) -> tuple[list[str], list[object]]:
    """The WHERE terms and parameters of the chunks with a window in the range (of a source)."""
    where = ["end_s >= ?", "start_s <= ?"]
    params: list[object] = [
        -np.inf if since_s is None else since_s,
        np.inf if until_s is None else until_s,
    ]
    if source is not None:
        where.append("source = ?")
        params.append(source)
    return where, params


class _transaction:
    """BEGIN ... COMMIT (ROLLBACK on an error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, _value: object, _tb: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


def _columns(chunk: Chunk) -> tuple[object, ...]:
    return (
        chunk.source_id,
        float(chunk.start_s[0]),
        float(chunk.end_s.max()),
        chunk.windows,
        chunk.dim,
        np.ascontiguousarray(chunk.start_s, dtype=np.float64).tobytes(),
        np.ascontiguousarray(chunk.end_s, dtype=np.float64).tobytes(),
        np.ascontiguousarray(chunk.level_dbfs, dtype=np.float32).tobytes(),
        np.ascontiguousarray(chunk.embeddings, dtype=np.float16).tobytes(),
    )
