"""Every stored window in a time range scored against the search texts, source by source."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from monitor.history.chunks import Chunk
from monitor.history.halves import widen
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


def score_chunks(
    chunks: Iterable[Chunk],
    scorer: LabelSetScorer,
    since_s: float | None = None,
    until_s: float | None = None,
) -> list[SourceScores]:
    """The windows of `chunks` (by source, then time) that start within [since_s, until_s],
    scored as the daemon scores them."""
    out: list[SourceScores] = []
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    current: str | None = None
    work = np.empty(0, dtype=np.int32)

    def close() -> None:
        if current is not None and parts:
            starts, ends, scores = (np.concatenate(p) for p in zip(*parts, strict=True))
            out.append(SourceScores(current, starts, ends, scores))

    for chunk in chunks:
        if chunk.source_id != current:
            close()
            current, parts = chunk.source_id, []
        keep = np.ones(chunk.windows, dtype=bool)
        if since_s is not None:
            keep &= chunk.start_s >= since_s
        if until_s is not None:
            keep &= chunk.start_s <= until_s
        if not keep.any():
            continue
        if work.size < chunk.embeddings.size:
            work = np.empty(chunk.embeddings.size, dtype=np.int32)
        audio = widen(chunk.embeddings, work)
        scores = scorer.score(audio if keep.all() else audio[keep])
        parts.append((chunk.start_s[keep], chunk.end_s[keep], scores))
    close()
    return out
