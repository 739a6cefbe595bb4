"""The one batching loop: bounded batches, positions that follow their windows, progress."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from monitor.model.batching import Positions, embed_in_batches


class Recorder:
    """An embedder that records each call and embeds a window as [its first sample, position]."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[int | None] | None]] = []

    def __call__(self, windows: Sequence[np.ndarray], positions: Positions | None, /) -> np.ndarray:
        self.calls.append((len(windows), None if positions is None else list(positions)))
        given = [None] * len(windows) if positions is None else list(positions)
        at = [-1 if p is None else p for p in given]
        return np.array([[w[0], p] for w, p in zip(windows, at, strict=True)], dtype=np.float32)


WINDOWS = [np.full(4, float(i), dtype=np.float32) for i in range(7)]


def test_windows_go_in_batches_of_at_most_batch_size_in_order() -> None:
    embed = Recorder()
    out = embed_in_batches(embed, WINDOWS, 3)
    assert [size for size, _ in embed.calls] == [3, 3, 1]
    np.testing.assert_array_equal(out[:, 0], np.arange(7))
    assert out.shape == (7, 2) and out.dtype == np.float32


def test_positions_follow_their_windows_into_each_batch() -> None:
    embed = Recorder()
    positions: list[int | None] = [0, 10, None, 30, 40, 50, 60]
    out = embed_in_batches(embed, WINDOWS, 2, positions=positions)
    assert [p for _, p in embed.calls] == [[0, 10], [None, 30], [40, 50], [60]]
    np.testing.assert_array_equal(out[:, 1], [0, 10, -1, 30, 40, 50, 60])


def test_no_positions_reach_the_embedder_as_none() -> None:
    embed = Recorder()
    embed_in_batches(embed, WINDOWS[:2], 8)
    assert embed.calls == [(2, None)]


def test_no_windows_give_an_empty_array_of_the_embedding_width() -> None:
    embed = Recorder()
    out = embed_in_batches(embed, [], 4, dim=512)
    assert out.shape == (0, 512) and out.dtype == np.float32
    assert embed.calls == []


def test_progress_hears_each_batch_size() -> None:
    sizes: list[int] = []
    embed_in_batches(Recorder(), WINDOWS, 4, on_batch=sizes.append)
    assert sizes == [4, 3]


def test_positions_must_match_the_windows() -> None:
    with pytest.raises(ValueError, match="3 positions for 7 windows"):
        embed_in_batches(Recorder(), WINDOWS, 2, positions=[0, 1, 2])


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        embed_in_batches(Recorder(), WINDOWS, 0)
