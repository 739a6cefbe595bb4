"""A run of one source's consecutive windows as stored together: times, levels, float16 rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from monitor.frames import WindowEmbedding
from monitor.history.halves import to_half


@dataclass(frozen=True)
class Chunk:
    """Consecutive windows of one source; one row of the history database."""

    source_id: str
    start_s: np.ndarray = field(repr=False)  # (n,) float64, Unix seconds (UTC) of each start
    end_s: np.ndarray = field(repr=False)  # (n,) float64, Unix seconds of each end
    level_dbfs: np.ndarray = field(repr=False)  # (n,) float32
    embeddings: np.ndarray = field(repr=False)  # (n, dim) float16 (halves.to_half), unit rows

    @property
    def windows(self) -> int:
        return int(self.start_s.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @classmethod
    def of(cls, source_id: str, items: Sequence[WindowEmbedding]) -> Chunk:
        """The windows of `items` (all of `source_id`), in the order given."""
        return cls(
            source_id,
            np.array([w.start_time.timestamp() for w in items], dtype=np.float64),
            np.array([w.end_time.timestamp() for w in items], dtype=np.float64),
            np.array([w.level_dbfs for w in items], dtype=np.float32),
            to_half(np.stack([w.embedding for w in items])),
        )

    def __add__(self, other: Chunk) -> Chunk:
        return Chunk(
            self.source_id,
            np.concatenate([self.start_s, other.start_s]),
            np.concatenate([self.end_s, other.end_s]),
            np.concatenate([self.level_dbfs, other.level_dbfs]),
            np.concatenate([self.embeddings, other.embeddings]),
        )

    def split(self, size: int) -> list[Chunk]:
        """Pieces of at most `size` windows, in order."""
        return [
            Chunk(
                self.source_id,
                self.start_s[i : i + size],
                self.end_s[i : i + size],
                self.level_dbfs[i : i + size],
                self.embeddings[i : i + size],
            )
            for i in range(0, self.windows, size)
        ]
