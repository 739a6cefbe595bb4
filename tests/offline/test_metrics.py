"""Evaluation metrics on small hand-made score matrices, against answers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.offline.metrics import (
    average_precision,
    classification_metrics,
    confusion_matrix,
    mean_average_precision,
    operating_point,
    per_class_accuracy,
    pool_windows,
    threshold_for_precision,
    top1_predictions,
    top_k_accuracy,
    true_class_ranks,
)

# Four clips, three classes: a clear hit, a near miss, an all-way tie, a two-way tie.
SCORES = np.array(
    [
        [0.7, 0.2, 0.1],  # truth 0: rank 0
        [0.5, 0.4, 0.1],  # truth 1: class 0 ahead -> rank 1
        [0.3, 0.3, 0.3],  # truth 2: tied with both others -> rank 2
        [0.1, 0.6, 0.6],  # truth 1: tied with class 2 -> rank 1
    ]
)
TRUTH = np.array([0, 1, 2, 1])


def test_ranks_count_ties_against_the_true_class() -> None:
    assert true_class_ranks(SCORES, TRUTH).tolist() == [0, 1, 2, 1]


def test_top_k_accuracy_by_hand() -> None:
    assert top_k_accuracy(SCORES, TRUTH, 1) == pytest.approx(1 / 4)
    assert top_k_accuracy(SCORES, TRUTH, 2) == pytest.approx(3 / 4)
    assert top_k_accuracy(SCORES, TRUTH, 3) == 1.0
    assert top_k_accuracy(SCORES, TRUTH, 5) == 1.0  # k beyond the classes: everything is in
    assert top_k_accuracy(np.zeros((0, 3)), np.zeros(0, dtype=int), 1) is None
    with pytest.raises(ValueError, match="k must"):
        top_k_accuracy(SCORES, TRUTH, 0)


def test_all_equal_scores_are_never_a_hit() -> None:
    flat = np.full((3, 3), 0.5)
    assert top_k_accuracy(flat, np.array([0, 1, 2]), 1) == 0.0
    assert top_k_accuracy(flat, np.array([0, 1, 2]), 3) == 1.0


def test_predictions_break_ties_against_the_truth_and_then_by_index() -> None:
    # clip 2: all tied, truth 2 -> the lowest other index (0); clip 3: tie 1/2, truth 1 -> 2.
    assert top1_predictions(SCORES, TRUTH).tolist() == [0, 0, 0, 2]


def test_confusion_matrix_rows_are_the_true_class() -> None:
    matrix = confusion_matrix(TRUTH, top1_predictions(SCORES, TRUTH), 3)
    assert matrix.tolist() == [[1, 0, 0], [1, 0, 1], [1, 0, 0]]
    assert matrix.dtype == np.int64
    assert per_class_accuracy(matrix) == [1.0, 0.0, 0.0]


def test_per_class_accuracy_of_a_class_without_clips_is_none() -> None:
    matrix = confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 3)
    assert per_class_accuracy(matrix) == [0.5, 1.0, None]


def test_average_precision_without_ties() -> None:
    # Ranked: + - + -  -> precision at the positives 1/1 and 2/3, each half the recall.
    scores = np.array([0.9, 0.8, 0.7, 0.3])
    assert average_precision(scores, np.array([1, 0, 1, 0], bool)) == pytest.approx(5 / 6)
    assert average_precision(scores, np.array([1, 1, 0, 0], bool)) == pytest.approx(1.0)
    assert average_precision(scores, np.array([0, 0, 0, 1], bool)) == pytest.approx(1 / 4)


def test_average_precision_treats_tied_scores_as_one_threshold() -> None:
    # Positive and negative tied at 0.8: they enter together (precision 2/3 at recall 1),
    # whatever order they are listed in; a stable sort alone would give 1.0 or 5/6.
    scores = np.array([0.9, 0.8, 0.8, 0.3])
    assert average_precision(scores, np.array([1, 1, 0, 0], bool)) == pytest.approx(5 / 6)
    assert average_precision(scores, np.array([1, 0, 1, 0], bool)) == pytest.approx(5 / 6)


def test_average_precision_without_positives_is_none_and_left_out_of_the_mean() -> None:
    assert average_precision(np.array([0.4, 0.2]), np.array([False, False])) is None
    assert mean_average_precision([0.5, None, 1.0]) == pytest.approx(0.75)
    assert mean_average_precision([None, None]) is None


def test_threshold_is_the_lowest_reaching_the_target_even_past_a_dip() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    positives = np.array([1, 0, 1, 1, 0], bool)
    # Precision high to low: 1/1, 1/2, 2/3, 3/4, 3/5.
    point = threshold_for_precision(scores, positives, 0.75)
    assert point is not None
    assert (point.threshold, point.precision, point.recall) == (0.6, 0.75, 1.0)
    assert (point.true_positives, point.false_positives, point.positives) == (3, 1, 3)
    point = threshold_for_precision(scores, positives, 0.76)
    assert point is not None
    assert (point.threshold, point.precision) == (0.9, 1.0)
    assert point.recall == pytest.approx(1 / 3)
    point = threshold_for_precision(scores, positives, 0.6)
    assert point is not None
    assert point.threshold == 0.5  # 3/5 reaches 0.6 exactly
    # What the threshold promises is what a detector with `score >= threshold` gets.
    assert operating_point(scores, positives, 0.6) == threshold_for_precision(
        scores, positives, 0.75
    )


def test_exact_precision_targets_are_reached_despite_float_rounding() -> None:
    scores = np.arange(10, 0, -1) / 10.0
    positives = np.array([1] * 9 + [0], bool)
    point = threshold_for_precision(scores, positives, 0.9)
    assert point is not None
    assert point.threshold == pytest.approx(0.1)
    assert point.recall == 1.0


def test_tied_scores_enter_together_at_a_threshold() -> None:
    scores = np.array([0.8, 0.8, 0.2])
    positives = np.array([1, 0, 1], bool)
    assert threshold_for_precision(scores, positives, 0.7) is None  # 1/2 at 0.8, 2/3 at 0.2
    point = threshold_for_precision(scores, positives, 0.6)
    assert point is not None
    assert (point.threshold, point.recall) == (0.2, 1.0)
    assert point.precision == pytest.approx(2 / 3)


def test_unreachable_precision_and_missing_positives_give_none() -> None:
    scores = np.array([0.9, 0.5])
    assert threshold_for_precision(scores, np.array([0, 1], bool), 0.9) is None
    assert threshold_for_precision(scores, np.array([0, 0], bool), 0.5) is None
    with pytest.raises(ValueError, match="target_precision"):
        threshold_for_precision(scores, np.array([1, 0], bool), 0.0)


def test_operating_point_with_nothing_detected() -> None:
    point = operating_point(np.array([0.2, 0.1]), np.array([1, 0], bool), 0.5)
    assert (point.precision, point.recall, point.true_positives, point.false_positives) == (
        0.0,
        0.0,
        0,
        0,
    )


def test_pool_windows_max_and_mean_per_clip() -> None:
    windows = np.array([[0.1, 0.9], [0.5, 0.3], [0.2, 0.2], [0.6, 0.0], [0.4, 0.4]])
    starts = np.array([0, 2, 3])  # clips of 2, 1 and 2 windows
    np.testing.assert_allclose(
        pool_windows(windows, starts, "max"), [[0.5, 0.9], [0.2, 0.2], [0.6, 0.4]]
    )
    np.testing.assert_allclose(
        pool_windows(windows, starts, "mean"), [[0.3, 0.6], [0.2, 0.2], [0.5, 0.2]]
    )
    assert pool_windows(windows[:0], np.array([], dtype=int), "max").shape == (0, 2)
    with pytest.raises(ValueError, match="clip_starts"):
        pool_windows(windows, np.array([0, 2, 2]), "max")
    with pytest.raises(ValueError, match="pooling"):
        pool_windows(windows, starts, "median")


def test_classification_metrics_put_together() -> None:
    # Class 3 has no clips at all.
    scores = np.column_stack([SCORES, np.full(4, 0.05)])
    m = classification_metrics(scores, TRUTH, target_precision=0.9)
    assert m.top1 == pytest.approx(0.25)
    assert m.top5 == 1.0
    assert m.support == [1, 2, 1, 0]
    assert m.per_class_accuracy == [1.0, 0.0, 0.0, None]
    assert m.confusion.tolist() == [[1, 0, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    # Class 0 column 0.7, 0.5, 0.3, 0.1 with the positive on top: AP 1, threshold 0.7.
    assert m.average_precision[0] == pytest.approx(1.0)
    assert m.thresholds[0] is not None
    assert m.thresholds[0].threshold == 0.7
    # Class 1 column 0.2, 0.4, 0.3, 0.6 with positives at 0.4 and 0.6: ranked + + - -.
    assert m.average_precision[1] == pytest.approx(1.0)
    # Class 2 column 0.1, 0.1, 0.3, 0.6 with its positive second: AP 1/2; 0.9 unreachable.
    assert m.average_precision[2] == pytest.approx(0.5)
    assert m.thresholds[2] is None
    assert m.average_precision[3] is None
    assert m.thresholds[3] is None
    assert m.mean_average_precision == pytest.approx(2.5 / 3)


def test_non_finite_scores_are_rejected() -> None:
    with pytest.raises(ValueError, match="finite"):
        top_k_accuracy(np.array([[np.nan, 0.1]]), np.array([0]), 1)
    with pytest.raises(ValueError, match="finite"):
        average_precision(np.array([np.inf, 0.1]), np.array([True, False]))
