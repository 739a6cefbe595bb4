"""Zero-shot scores of audio embeddings against the precomputed prompts of each label set."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from monitor.config import LabelSetConfig, ScoringMode

TextEmbedder = Callable[[Sequence[str]], np.ndarray]

# Absolute scores without background labels are the cosine itself from here up, so the
# documented thresholds (CLAP matches: 0.2-0.6) keep their meaning; only below it is the cosine
# squeezed, so that negative cosines still rank instead of all tying at 0.
COSINE_KNEE = 0.05


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax along the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    out: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * x))  # tanh form: no overflow warnings
    return out


def cosine_score(cos: np.ndarray) -> np.ndarray:
    """A strictly increasing map of cosine similarity onto [0, 1]: the cosine from COSINE_KNEE up.

    Below the knee k it is k^2 / (2k - cos), which meets the identity with the same slope at k
    and stays above 0 (k^2 / (1 + 2k) at cos = -1), so different cosines never tie.
    """
    c = np.asarray(cos, dtype=np.float64)  # float64: the squeezed tail keeps its resolution
    k = COSINE_KNEE
    tail = k * k / (2.0 * k - np.minimum(c, k))  # the minimum keeps the unused branch finite
    # A cosine of unit vectors can round a hair above 1; the score stays a share-like [0, 1].
    out: np.ndarray = np.minimum(np.where(c >= k, c, tail), 1.0).astype(np.float32)
    return out


def ensemble_embeddings(
    embed_text: TextEmbedder, prompt_groups: Sequence[Sequence[str]]
) -> np.ndarray:
    """One unit vector per group: the mean of its prompts' embeddings, renormalised.

    All prompts go through the text encoder in one call. A group of one prompt gives exactly
    that prompt's embedding, so single-template scoring equals the reference pipeline.
    """
    flat = [prompt for group in prompt_groups for prompt in group]
    embedded = embed_text(flat)
    out = []
    start = 0
    for group in prompt_groups:
        block = embedded[start : start + len(group)]
        start += len(group)
        if len(group) == 1:
            out.append(block[0])
            continue
        mean = block.mean(axis=0)
        out.append(mean / np.linalg.norm(mean))
    if not out:
        return embedded[:0]
    return np.stack(out).astype(np.float32)


@dataclass(frozen=True)
class LabelSetScorer:
    """One label set's normalised text embeddings, mode and thresholds, ready to score windows."""

    name: str
    labels: tuple[str, ...]
    thresholds: tuple[float, ...]
    mode: ScoringMode
    text_embeddings: np.ndarray  # (labels, dim), float32, L2-normalised
    background_embeddings: np.ndarray  # (background labels, dim); may have 0 rows
    logit_scale: float  # exp(logit_scale_a) of the checkpoint

    @classmethod
    def build(
        cls, label_set: LabelSetConfig, embed_text: TextEmbedder, logit_scale: float
    ) -> LabelSetScorer:
        """Embed the set's prompts (ensembles averaged) and keep them for every window."""
        embeddings = ensemble_embeddings(embed_text, prompt_groups(label_set))
        n = len(label_set.labels)
        return cls(
            name=label_set.name,
            labels=tuple(label.name for label in label_set.labels),
            thresholds=tuple(label_set.threshold_for(label) for label in label_set.labels),
            mode=label_set.mode,
            text_embeddings=np.ascontiguousarray(embeddings[:n]),
            background_embeddings=np.ascontiguousarray(embeddings[n:]),
            logit_scale=float(logit_scale),
        )

    def with_mode(self, mode: ScoringMode) -> LabelSetScorer:
        """The same prompts scored another way (eval compares modes on one embedding pass)."""
        return LabelSetScorer(
            self.name,
            self.labels,
            self.thresholds,
            mode,
            self.text_embeddings,
            self.background_embeddings,
            self.logit_scale,
        )

    def score(self, audio_embeddings: np.ndarray) -> np.ndarray:
        """Scores (windows, labels) in [0, 1] from L2-normalised (windows, dim) embeddings.

        softmax: the softmax of logit_scale * cosine over labels and background prompts,
        reported for the labels; without background prompts exactly what the transformers
        zero-shot-audio-classification pipeline computes from `logits_per_audio`.
        absolute: a label's score ignores the other labels. With background prompts it is
        sigmoid(logit_scale * (cos_label - max cos_background)), the label's share of a
        two-way softmax against the best background prompt (0.5 = as close as that); without
        them it is `cosine_score(cos_label)`: the cosine itself from 0.05 up, so thresholds
        mean a cosine, and squeezed monotonically into (0, 0.05) below, so a window's labels
        rank as in softmax mode even when every cosine is negative.
        """
        audio = audio_embeddings.astype(np.float32, copy=False)
        # Without background prompts the product is (windows, 0), which score_cosines expects.
        return self.score_cosines(
            audio @ self.text_embeddings.T, audio @ self.background_embeddings.T
        )

    def score_cosines(self, cos: np.ndarray, background_cos: np.ndarray) -> np.ndarray:
        """`score`, from the windows' cosines with the labels (windows, labels) and with the
        background prompts (windows, background labels), however they were computed."""
        has_background = background_cos.shape[1] > 0
        if self.mode == "softmax":
            logits = self.logit_scale * cos
            if has_background:
                logits = np.concatenate([logits, self.logit_scale * background_cos], axis=1)
            return softmax(logits)[:, : len(self.labels)]
        if has_background:
            best_background = background_cos.max(axis=1, keepdims=True)
            return sigmoid(self.logit_scale * (cos - best_background))
        return cosine_score(cos)


def prompt_groups(label_set: LabelSetConfig) -> list[list[str]]:
    """The prompts of each label, then of each background label, of one set."""
    groups = [list(label_set.prompts_for(label)) for label in label_set.labels]
    groups += [list(label_set.background_prompts(name)) for name in label_set.background]
    return groups


def build_scorers(
    label_sets: Sequence[LabelSetConfig], embed_text: TextEmbedder, logit_scale: float
) -> list[LabelSetScorer]:
    """Scorers for every set; the text encoder runs here once, never per window.

    Every set's prompts go to the encoder in one call: a prompt missing from the cache costs
    the torch and onnx backends a helper process that loads the text tower, so one for all
    sets rather than one per set (measured: 4 s each with the full-size tower on 2 cores).
    """
    prompts = list(
        dict.fromkeys(p for s in label_sets for group in prompt_groups(s) for p in group)
    )
    if not prompts:
        return [LabelSetScorer.build(s, embed_text, logit_scale) for s in label_sets]
    table = dict(zip(prompts, np.asarray(embed_text(prompts), dtype=np.float32), strict=True))

    def embed_known(batch: Sequence[str]) -> np.ndarray:
        return np.stack([table[prompt] for prompt in batch])

    return [LabelSetScorer.build(s, embed_known, logit_scale) for s in label_sets]
