"""Embedding many windows a bounded batch at a time: the one loop every caller shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from monitor.frames import Position

Positions = Sequence[Position]


class BatchEmbedder(Protocol):
    """Embeds one batch of windows, given each window's stream position (or no positions)."""

    def __call__(self, windows: Sequence[np.ndarray], positions: Positions | None, /) -> np.ndarray:
        """(len(windows), dim) float32 embeddings."""
        ...


def embed_in_batches(
    embed: BatchEmbedder,
    windows: Sequence[np.ndarray],
    batch_size: int,
    *,
    positions: Positions | None = None,
    dim: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(len(windows), dim) embeddings, at most `batch_size` windows per call of `embed`.

    positions, if given, follow their windows into each batch; `dim` shapes the result of no
    windows; on_batch hears each batch's size once it is embedded (progress bars).
    """
    if len(windows) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1 (got {batch_size})")
    if positions is not None and len(positions) != len(windows):
        raise ValueError(f"{len(positions)} positions for {len(windows)} windows")
    parts = []
    for start in range(0, len(windows), batch_size):
        stop = start + batch_size
        batch = windows[start:stop]
        parts.append(embed(batch, None if positions is None else positions[start:stop]))
        if on_batch is not None:
            on_batch(len(batch))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class AudioStages(Protocol):
    """A runner whose audio path is two stages: features, then the tower on them."""

    max_batch: int
    embedding_dim: int

    def audio_features(self, windows: Sequence[np.ndarray], positions: Positions | None) -> Any:
        """The tower's input for a batch of windows."""
        ...

    def embed_audio_features(self, features: Any) -> np.ndarray:
        """(batch, dim) unit-norm float32 embeddings of those features."""
        ...


def embed_through_stages(
    runner: AudioStages, windows: Sequence[np.ndarray], positions: Positions | None
) -> np.ndarray:
    """A runner's embed_audio: its two stages, max_batch windows at a time."""
    return embed_in_batches(
        lambda batch, at: runner.embed_audio_features(runner.audio_features(batch, at)),
        windows,
        runner.max_batch,
        positions=positions,
        dim=runner.embedding_dim,
    )
