"""Classification metrics for zero-shot evaluation, in plain numpy (no scikit-learn).

Scores are (clips, classes) arrays, `truth` the class index of each clip. A tie between the
true class and another class is counted as a miss: with random or degenerate scores (all
equal), an evaluation must not credit whichever class happens to come first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Precision is a ratio of small integers; this only absorbs float rounding at the target.
_PRECISION_SLACK = 1e-12


def _check(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.int64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (clips, classes), got shape {scores.shape}")
    if truth.shape != (scores.shape[0],):
        raise ValueError(f"truth must have one class per clip, got shape {truth.shape}")
    if truth.size and (truth.min() < 0 or truth.max() >= scores.shape[1]):
        raise ValueError("truth holds a class index outside the score columns")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    return scores, truth


def pool_windows(window_scores: np.ndarray, clip_starts: np.ndarray, how: str) -> np.ndarray:
    """Clip-level scores from window-level ones: "max" or "mean" over each clip's windows.

    `clip_starts` holds the index of each clip's first window (ascending, first 0); every clip
    has at least one window.
    """
    window_scores = np.asarray(window_scores, dtype=np.float64)
    starts = np.asarray(clip_starts, dtype=np.int64)
    if starts.size == 0:
        return np.zeros((0, window_scores.shape[1]), dtype=np.float64)
    if starts[0] != 0 or np.any(np.diff(starts) <= 0) or starts[-1] >= len(window_scores):
        raise ValueError("clip_starts must rise strictly from 0, each clip owning a window")
    if how == "max":
        pooled: np.ndarray = np.maximum.reduceat(window_scores, starts, axis=0)
        return pooled
    if how == "mean":
        counts = np.diff(np.r_[starts, len(window_scores)])
        mean: np.ndarray = np.add.reduceat(window_scores, starts, axis=0) / counts[:, None]
        return mean
    raise ValueError(f"unknown pooling {how!r} (max or mean)")


def true_class_ranks(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """0-based rank of each clip's true class; every class scoring at least as high is ahead."""
    scores, truth = _check(scores, truth)
    true_scores = scores[np.arange(len(truth)), truth][:, None]
    ranks: np.ndarray = (scores >= true_scores).sum(axis=1) - 1
    return ranks


def top_k_accuracy(scores: np.ndarray, truth: np.ndarray, k: int) -> float | None:
    """Fraction of clips whose true class is among the k best (ties against it); None if empty."""
    if k < 1:
        raise ValueError("k must be at least 1")
    ranks = true_class_ranks(scores, truth)
    if ranks.size == 0:
        return None
    return float(np.mean(ranks < k))


def top1_predictions(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The predicted class of each clip: the best-scoring one, a tie going against the truth.

    Among several other classes tied for the best score, the lowest index is predicted, so
    the confusion matrix agrees with `top_k_accuracy(k=1)` and stays deterministic.
    """
    scores, truth = _check(scores, truth)
    rows = np.arange(len(truth))
    others = scores.copy()
    others[rows, truth] = -np.inf
    best_other = others.argmax(axis=1) if scores.shape[1] > 1 else truth
    correct = true_class_ranks(scores, truth) == 0
    predicted: np.ndarray = np.where(correct, truth, best_other)
    return predicted


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (n_classes, n_classes): rows are the true class, columns the predicted one."""
    truth = np.asarray(truth, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if truth.shape != predicted.shape:
        raise ValueError("truth and predicted must have the same shape")
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def per_class_accuracy(confusion: np.ndarray) -> list[float | None]:
    """Recall of the top-1 prediction per true class; None for a class without clips."""
    support = confusion.sum(axis=1)
    return [
        float(confusion[i, i] / support[i]) if support[i] > 0 else None
        for i in range(confusion.shape[0])
    ]


def _operating_points(
    scores: np.ndarray, positives: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct score, high to low: (threshold, true positives, false positives).

    Predicted positive = score >= threshold, so clips with tied scores enter together.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    if scores.shape != positives.shape or scores.ndim != 1:
        raise ValueError("scores and positives must be 1-d and of the same length")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    hits = positives[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(ordered)), len(ordered) - 1]
    tp = np.cumsum(hits)[last_of_group]
    fp = np.cumsum(~hits)[last_of_group]
    return ordered[last_of_group], tp, fp


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """One-vs-rest AP: sum over thresholds of (recall gained) x precision; None without positives.

    Tied scores form one threshold, as in scikit-learn's average_precision_score.
    """
    n_positive = int(np.count_nonzero(positives))
    if len(scores) == 0 or n_positive == 0:
        return None
    _, tp, fp = _operating_points(scores, positives)
    precision = tp / (tp + fp)
    recall = tp / n_positive
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(aps: Sequence[float | None]) -> float | None:
    """Macro mean of the defined APs (classes without positives are left out); None if none."""
    defined = [ap for ap in aps if ap is not None]
    return float(np.mean(defined)) if defined else None


@dataclass(frozen=True)
class OperatingPoint:
    """What a threshold gives on the evaluated clips (predicted positive = score >= threshold)."""

    threshold: float
    precision: float
    recall: float
    true_positives: int
    false_positives: int
    positives: int


def operating_point(scores: np.ndarray, positives: np.ndarray, threshold: float) -> OperatingPoint:
    """Precision and recall of one threshold; precision is 0 when nothing is predicted."""
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    predicted = scores >= threshold
    tp = int(np.count_nonzero(predicted & positives))
    fp = int(np.count_nonzero(predicted & ~positives))
    n_positive = int(np.count_nonzero(positives))
    return OperatingPoint(
        threshold=float(threshold),
        precision=tp / (tp + fp) if tp + fp else 0.0,
        recall=tp / n_positive if n_positive else 0.0,
        true_positives=tp,
        false_positives=fp,
        positives=n_positive,
    )


def threshold_for_precision(
    scores: np.ndarray, positives: np.ndarray, target_precision: float
) -> OperatingPoint | None:
    """The lowest threshold whose precision reaches the target, or None when none does.

    The lowest such threshold gives the most recall among those reaching the target. Only the
    clips' own scores are candidates, so the threshold is the score of the weakest clip
    detected; precision need not fall monotonically as the threshold drops, so every
    candidate is checked. None as well when the class has no positive clip.
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError("target_precision must be in (0, 1]")
    n_positive = int(np.count_nonzero(positives))
    if len(scores) == 0 or n_positive == 0:
        return None
    thresholds, tp, fp = _operating_points(scores, positives)
    reached = np.flatnonzero(tp / (tp + fp) >= target_precision - _PRECISION_SLACK)
    if reached.size == 0:
        return None
    i = int(reached[-1])  # thresholds run high to low
    return OperatingPoint(
        threshold=float(thresholds[i]),
        precision=float(tp[i] / (tp[i] + fp[i])),
        recall=float(tp[i] / n_positive),
        true_positives=int(tp[i]),
        false_positives=int(fp[i]),
        positives=n_positive,
    )


@dataclass(frozen=True)
class ClassificationMetrics:
    """Everything eval reports for one scoring mode."""

    top1: float | None
    top5: float | None
    support: list[int]  # clips per true class
    per_class_accuracy: list[float | None]
    confusion: np.ndarray  # (classes, classes) int64, rows = true class
    average_precision: list[float | None]
    mean_average_precision: float | None
    thresholds: list[OperatingPoint | None]


def classification_metrics(
    scores: np.ndarray, truth: np.ndarray, target_precision: float
) -> ClassificationMetrics:
    """Top-1/top-5, per-class accuracy, confusion, AP per class, mAP, thresholds for a precision."""
    scores, truth = _check(scores, truth)
    n_classes = scores.shape[1]
    confusion = confusion_matrix(truth, top1_predictions(scores, truth), n_classes)
    aps = []
    thresholds = []
    for c in range(n_classes):
        positives = truth == c
        aps.append(average_precision(scores[:, c], positives))
        thresholds.append(threshold_for_precision(scores[:, c], positives, target_precision))
    return ClassificationMetrics(
        top1=top_k_accuracy(scores, truth, 1),
        top5=top_k_accuracy(scores, truth, 5),
        support=[int(n) for n in confusion.sum(axis=1)],
        per_class_accuracy=per_class_accuracy(confusion),
        confusion=confusion,
        average_precision=aps,
        mean_average_precision=mean_average_precision(aps),
        thresholds=thresholds,
    )
