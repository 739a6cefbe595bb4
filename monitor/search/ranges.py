"""Matching windows merged into time ranges: above a threshold, or the best peaks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitor.search.scan import SourceScores

# Windows whose start is at most this far after the range's end still touch it (times are
# float seconds from sample indices: adjacent windows can differ by rounding).
ADJACENT_SECONDS = 1e-3
# --top N merges the best TOP_POOL_FACTOR * N windows of each text, so that the neighbours of a
# peak (which score nearly as high) widen its range instead of each counting as a match.
TOP_POOL_FACTOR = 20


@dataclass(frozen=True)
class Range:
    """Merged windows of one source: [start_s, end_s], its best window and how many."""

    source_id: str
    start_s: float
    end_s: float
    peak_score: float
    peak_start_s: float
    windows: int


def merge(scores: SourceScores, column: int, keep: np.ndarray) -> list[Range]:
    """The kept windows of one source (in time order) merged where they overlap or touch."""
    index = np.flatnonzero(keep)
    if index.size == 0:
        return []
    starts, ends = scores.start_s[index], scores.end_s[index]
    values = scores.scores[index, column]
    reach = np.maximum.accumulate(ends)
    breaks = np.flatnonzero(starts[1:] > reach[:-1] + ADJACENT_SECONDS) + 1
    firsts = np.concatenate([[0], breaks])
    lasts = np.concatenate([breaks, [index.size]])
    out = []
    for first, last in zip(firsts.tolist(), lasts.tolist(), strict=True):
        best = first + int(np.argmax(values[first:last]))
        out.append(
            Range(
                scores.source_id,
                float(starts[first]),
                float(reach[last - 1]),
                float(values[best]),
                float(starts[best]),
                last - first,
            )
        )
    return out


def above(sources: list[SourceScores], column: int, threshold: float) -> list[Range]:
    """Every range of windows scoring at least `threshold`, by start time."""
    found = [r for s in sources for r in merge(s, column, s.scores[:, column] >= threshold)]
    return sorted(found, key=lambda r: (r.start_s, r.source_id))


def best(sources: list[SourceScores], column: int, top: int) -> list[Range]:
    """The `top` ranges with the highest peaks: the best TOP_POOL_FACTOR * top windows (of
    every source) merged where they overlap or touch, ranked by peak."""
    total = sum(s.windows for s in sources)
    if total == 0:
        return []
    pool = min(total, TOP_POOL_FACTOR * top)
    every = np.concatenate([s.scores[:, column] for s in sources])
    cut = float(np.partition(every, total - pool)[total - pool])
    found = [r for s in sources for r in merge(s, column, s.scores[:, column] >= cut)]
    return sorted(found, key=lambda r: (-r.peak_score, r.start_s))[:top]
