"""Every stored window in a time range scored against the search texts, source by source."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from monitor.history.chunks import Chunk
from monitor.history.halves import SCALE, widen_scaled
from monitor.pipeline.scoring import LabelSetScorer

SEARCH_SET_NAME = "search"


@dataclass(frozen=True)
class SourceScores:
    """One source's windows in the range, in time order, and their scores per text."""

    source_id: str
    start_s: np.ndarray = field(repr=False)  # (n,) float64 Unix seconds
    end_s: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)  # (n, texts) float32

    @property
    def windows(self) -> int:
        return int(self.start_s.shape[0])


def text_scorer(
    texts: tuple[str, ...], text_embeddings: np.ndarray, softmax: bool, logit_scale: float
) -> LabelSetScorer:
    """The daemon's scorer for the texts as one label set without background prompts:
    absolute (cosine_score of each text's cosine), or a softmax over the texts."""
    return LabelSetScorer(
        name=SEARCH_SET_NAME,
        labels=texts,
        thresholds=tuple(0.0 for _ in texts),
        mode="softmax" if softmax else "absolute",
        text_embeddings=np.ascontiguousarray(text_embeddings, dtype=np.float32),
        background_embeddings=np.zeros((0, text_embeddings.shape[1]), dtype=np.float32),
        logit_scale=logit_scale,
    )


@dataclass(frozen=True)
class SourceCosines:
    """One source's windows in the range, in time order, and their cosines with the prompts."""

    source_id: str
    start_s: np.ndarray = field(repr=False)  # (n,) float64 Unix seconds
    end_s: np.ndarray = field(repr=False)
    cosines: np.ndarray = field(repr=False)  # (n, prompts) float32: the texts, then background


def scaled_prompts(scorer: LabelSetScorer) -> np.ndarray:
    """(dim, prompts) float32: the scorer's texts, then its background prompts, times 2^112.

    They carry the 2^112 that widen_scaled leaves out of the stored rows: the same products
    with one pass over every stored value fewer."""
    prompts = np.concatenate([scorer.text_embeddings, scorer.background_embeddings]).T
    return np.ascontiguousarray(prompts * SCALE, dtype=np.float32)


def cosines_of(
    chunks: Iterable[Chunk],
    prompts: np.ndarray,
    since_s: float | None = None,
    until_s: float | None = None,
) -> list[SourceCosines]:
    """The cosines of the windows of `chunks` (by source, then time) that start within
    [since_s, until_s] with `scaled_prompts`."""
    out: list[SourceCosines] = []
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    current: str | None = None
    work = np.empty(0, dtype=np.int32)

    def close() -> None:
        if current is not None and parts:
            starts, ends, cos = (np.concatenate(p) for p in zip(*parts, strict=True))
            out.append(SourceCosines(current, starts, ends, cos))

    for chunk in chunks:
        if chunk.source_id != current:
            close()
            current, parts = chunk.source_id, []
        starts, ends = chunk.start_s, chunk.end_s
        keep = _starting_within(starts, since_s, until_s)
        if keep is not None and not keep.any():
            continue
        if work.size < chunk.embeddings.size:
            work = np.empty(chunk.embeddings.size, dtype=np.int32)
        rows = widen_scaled(chunk.embeddings, work)
        if keep is not None:
            rows, starts, ends = rows[keep], starts[keep], ends[keep]
        parts.append((starts, ends, rows @ prompts))
    close()
    return out


def merged(pieces: Iterable[list[SourceCosines]]) -> list[SourceCosines]:
    """Per source, the pieces' windows joined in the order given (of consecutive time spans),
    by source."""
    by_source: dict[str, list[SourceCosines]] = {}
    for piece in pieces:
        for part in piece:
            by_source.setdefault(part.source_id, []).append(part)
    return [
        SourceCosines(
            source,
            np.concatenate([p.start_s for p in parts]),
            np.concatenate([p.end_s for p in parts]),
            np.concatenate([p.cosines for p in parts]),
        )
        for source, parts in sorted(by_source.items())
    ]


def scores_of(cosines: Iterable[SourceCosines], scorer: LabelSetScorer) -> list[SourceScores]:
    """Each source's windows scored as the daemon scores them, in one call per source (per-row
    calls would cost more than their arithmetic at 256 windows a row)."""
    labels = scorer.text_embeddings.shape[0]
    return [
        SourceScores(
            c.source_id,
            c.start_s,
            c.end_s,
            scorer.score_cosines(c.cosines[:, :labels], c.cosines[:, labels:]),
        )
        for c in cosines
    ]


def score_chunks(
    chunks: Iterable[Chunk],
    scorer: LabelSetScorer,
    since_s: float | None = None,
    until_s: float | None = None,
) -> list[SourceScores]:
    """The windows of `chunks` (by source, then time) that start within [since_s, until_s],
    scored as the daemon scores them."""
    return scores_of(cosines_of(chunks, scaled_prompts(scorer), since_s, until_s), scorer)


def _starting_within(
    starts: np.ndarray, since_s: float | None, until_s: float | None
) -> np.ndarray | None:
    """Which windows start within the range; None when all of them do."""
    if since_s is None and until_s is None:
        return None
    first, last = float(starts.min()), float(starts.max())
    if (since_s is None or first >= since_s) and (until_s is None or last <= until_s):
        return None
    keep = np.ones(starts.shape[0], dtype=bool)
    if since_s is not None:
        keep &= starts >= since_s
    if until_s is not None:
        keep &= starts <= until_s
    return keep
