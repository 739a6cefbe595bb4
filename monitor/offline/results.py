"""What `audio-monitor eval` found, as frozen dataclasses whose fields are report.json's keys."""

from __future__ import annotations

from dataclasses import dataclass

THRESHOLD_DIGITS = 4  # significant digits of a suggested threshold in a config
TIE_RULE = "a tie between the true class and another counts as a miss"


@dataclass(frozen=True)
class DatasetSummary:
    """Which dataset was evaluated, which part of it, and how many of its clips could be read."""

    source: str
    kind: str
    name: str
    folds: tuple[int, ...] | None
    limit: int | None
    classes: tuple[str, ...]  # label names, in target order
    targets: tuple[int, ...]
    clips_selected: int
    clips_evaluated: int
    clips_failed: int


@dataclass(frozen=True)
class FailedClip:
    """A clip left out because it could not be decoded."""

    filename: str
    reason: str


@dataclass(frozen=True)
class ModelSummary:
    """The checkpoint the clips were embedded with."""

    name: str
    revision: str | None


@dataclass(frozen=True)
class SuggestedThreshold:
    """A label's lowest threshold reaching the target precision, and what it gives."""

    threshold: float  # the weakest detected clip's score
    config_threshold: float  # the same clips selected, rounded for a config
    precision: float
    recall: float
    true_positives: int
    false_positives: int
    positives: int


@dataclass(frozen=True)
class ConfusionMatrix:
    """Top-1 counts: rows are the true class, columns the predicted one, both in `labels` order."""

    labels: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class ModeReport:
    """The metrics of one scoring mode; per-class values are keyed by label name."""

    top1: float | None
    top5: float | None
    top5_k: int  # the k of top5: 5, or fewer with fewer classes
    mAP: float | None  # the report's key
    per_class_accuracy: dict[str, float | None]
    support: dict[str, int]
    confusion_matrix: ConfusionMatrix
    average_precision: dict[str, float | None]
    thresholds: dict[str, SuggestedThreshold | None]


@dataclass(frozen=True)
class ClipOutcome:
    """One evaluated clip: its true class and each mode's top-1 prediction."""

    filename: str
    fold: int
    class_: str  # `class` in JSON
    predicted: dict[str, str]  # mode -> label


@dataclass(frozen=True)
class Timing:
    """When the run started and where its time went."""

    started_at: str  # ISO 8601, UTC, whole seconds
    setup_seconds: float
    embedding_seconds: float
    total_seconds: float


@dataclass(frozen=True)
class EvalReport:
    """Everything one eval run reports: report.json is `jsondoc.as_json` of it."""

    dataset: DatasetSummary
    failed_clips: tuple[FailedClip, ...]
    model: ModelSummary
    templates: tuple[str, ...]
    background: tuple[str, ...]
    background_used_by: tuple[str, ...]  # the modes that score the background labels
    aggregate: str
    window_seconds: float
    hop_seconds: float
    windows: int
    target_precision: float
    tie_rule: str
    modes: dict[str, ModeReport]
    clips: tuple[ClipOutcome, ...]
    timing: Timing
