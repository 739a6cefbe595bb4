"""Zero-shot scores of an audio embedding against the precomputed prompts of each label set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitor.config import LabelSetConfig


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax along the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    out: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return out


@dataclass(frozen=True)
class LabelSetScorer:
    """One label set's normalised text embeddings and thresholds, ready to score windows."""

    name: str
    labels: tuple[str, ...]
    thresholds: tuple[float, ...]
    text_embeddings: np.ndarray  # (labels, dim), float32, L2-normalised
    logit_scale: float  # exp(logit_scale_a) of the checkpoint

    @classmethod
    def build(
        cls, label_set: LabelSetConfig, text_embeddings: np.ndarray, logit_scale: float
    ) -> LabelSetScorer:
        if text_embeddings.shape[0] != len(label_set.labels):
            raise ValueError("one text embedding per label is needed")
        return cls(
            name=label_set.name,
            labels=tuple(label.name for label in label_set.labels),
            thresholds=tuple(label_set.threshold_for(label) for label in label_set.labels),
            text_embeddings=np.ascontiguousarray(text_embeddings, dtype=np.float32),
            logit_scale=float(logit_scale),
        )

    def score(self, audio_embeddings: np.ndarray) -> np.ndarray:
        """Scores (windows, labels): softmax over the set of logit_scale * cosine.

        `audio_embeddings` is (windows, dim) and L2-normalised, as the model returns them;
        this is exactly what the transformers zero-shot-audio-classification pipeline
        computes from `logits_per_audio`.
        """
        logits = self.logit_scale * (audio_embeddings.astype(np.float32) @ self.text_embeddings.T)
        return softmax(logits)
