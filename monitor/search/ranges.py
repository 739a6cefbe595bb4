"""Matching windows merged into time ranges: above a threshold, or the best peaks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from monitor.search.scan import SourceScores

# Windows whose start is at most this far after the range's end still touch it (times are
# float seconds from sample indices: adjacent windows can differ by rounding).
ADJACENT_SECONDS = 1e-3
# --top N: a peak's range takes in the touching windows that score within this of the peak,
# so that a sound's neighbouring windows widen its range instead of each being a match.
TOP_DROP = 0.05
# Windows ranked before falling back to sorting them all: a full sort of a week of windows
# costs more than the rest of the ranking.
TOP_CANDIDATES_PER_MATCH = 64


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
    """The `top` highest peaks (of every source) that lie in no better peak's range, by peak;
    each range spans the touching windows around its peak scoring within TOP_DROP of it."""
    found: list[Range] = []
    if not sources:
        return found
    every = np.concatenate([s.scores[:, column] for s in sources])
    owner = np.repeat(np.arange(len(sources)), [s.windows for s in sources])
    offset = np.concatenate([[0], np.cumsum([s.windows for s in sources])])
    covered = np.zeros(every.size, dtype=bool)
    for flat in _descending(every, TOP_CANDIDATES_PER_MATCH * top):
        if len(found) == top:
            break
        if covered[flat]:
            continue
        index = int(owner[flat])
        found.append(
            _around(
                sources[index],
                column,
                flat - int(offset[index]),
                covered[offset[index] : offset[index + 1]],
            )
        )
    return found


def _around(scores: SourceScores, column: int, peak: int, covered: np.ndarray) -> Range:
    """The range of the peak window: grown both ways over touching, uncovered windows that
    score within TOP_DROP of it; marks them covered."""
    values, starts, ends = scores.scores[:, column], scores.start_s, scores.end_s
    floor = values[peak] - TOP_DROP
    first = last = peak
    while (
        first > 0
        and not covered[first - 1]
        and values[first - 1] >= floor
        and ends[first - 1] + ADJACENT_SECONDS >= starts[first]
    ):
        first -= 1
    reach = float(ends[peak])
    while (
        last + 1 < values.size
        and not covered[last + 1]
        and values[last + 1] >= floor
        and starts[last + 1] <= reach + ADJACENT_SECONDS
    ):
        last += 1
        reach = max(reach, float(ends[last]))
    covered[first : last + 1] = True
    return Range(
        scores.source_id,
        float(starts[first]),
        float(ends[first : last + 1].max()),
        float(values[peak]),
        float(starts[peak]),
        last - first + 1,
    )


def _descending(values: np.ndarray, first: int) -> Iterator[int]:
    """Indices of `values` from the highest down: the best `first` by a partial sort, then
    (rarely needed) the rest."""
    if first < values.size:
        part = np.argpartition(-values, first)[:first]
        head = part[np.argsort(-values[part], kind="stable")]
        yield from head.tolist()
        rest = np.ones(values.size, dtype=bool)
        rest[head] = False
        index = np.flatnonzero(rest)
        yield from index[np.argsort(-values[index], kind="stable")].tolist()
    else:
        yield from np.argsort(-values, kind="stable").tolist()
