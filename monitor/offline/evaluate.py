"""`audio-monitor eval`: zero-shot accuracy of label prompts on a labelled dataset (ESC-50)."""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from monitor.audio.decode import MAX_WINDOW_SECONDS, clip_windows
from monitor.config import Config, LabelSetConfig, ScoringMode, slugify
from monitor.errors import EXIT_OK, ConfigError, SourceError
from monitor.model.runner import ClapRunner, load_clap
from monitor.offline.common import (
    adhoc_label_set,
    config_from_args,
    embed_in_batches,
    model_from_args,
    output_dir,
    progress,
)
from monitor.offline.dataset import LabelledClip, LabelledDataset, open_dataset
from monitor.offline.jsondoc import as_json, json_text
from monitor.offline.metrics import (
    ClassificationMetrics,
    OperatingPoint,
    classification_metrics,
    operating_point,
    pool_windows,
    top1_predictions,
)
from monitor.offline.report import (
    confusion_png,
    markdown,
    require_matplotlib,
    summary_table,
    thresholds_yaml,
)
from monitor.offline.results import (
    THRESHOLD_DIGITS,
    TIE_RULE,
    ClipOutcome,
    ConfusionMatrix,
    DatasetSummary,
    EvalReport,
    FailedClip,
    ModelSummary,
    ModeReport,
    SuggestedThreshold,
    Timing,
)
from monitor.pipeline.scoring import LabelSetScorer

logger = logging.getLogger(__name__)

MODES: tuple[ScoringMode, ...] = ("softmax", "absolute")


@dataclass(frozen=True)
class _Options:
    window_seconds: float
    hop_seconds: float
    batch_size: int
    aggregate: str
    target_precision: float
    folds: list[int] | None
    limit: int | None


def _options(args: argparse.Namespace) -> _Options:
    """The numeric flags, checked before anything slow happens."""
    window = float(args.window_seconds)
    hop = float(args.hop_seconds) if args.hop_seconds is not None else window
    if not 0 < window <= MAX_WINDOW_SECONDS:
        raise ConfigError(
            f"--window-seconds: must be in (0, {MAX_WINDOW_SECONDS:g}] (got {window})"
        )
    if hop <= 0:
        raise ConfigError(f"--hop-seconds: must be positive (got {hop})")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: must be at least 1 (got {args.batch_size})")
    if not 0 < args.target_precision <= 1:
        raise ConfigError(f"--target-precision: must be in (0, 1] (got {args.target_precision})")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit: must be at least 1 (got {args.limit})")
    return _Options(
        window_seconds=window,
        hop_seconds=hop,
        batch_size=int(args.batch_size),
        aggregate=str(args.aggregate),
        target_precision=float(args.target_precision),
        folds=list(args.folds) if args.folds else None,
        limit=args.limit,
    )


def _label_set(
    dataset: LabelledDataset, args: argparse.Namespace, config: Config | None
) -> LabelSetConfig:
    """The dataset's classes as one label set: templates and background from flags or config."""
    base = config.label_sets[0] if config is not None else None
    templates = args.template or (base.prompt_template if base is not None else None)
    background = list(base.background) if base is not None else []
    for name in args.background or []:
        if slugify(name) not in {slugify(b) for b in background}:
            background.append(name)
    classes = {slugify(c) for c in dataset.classes}
    for name in background:
        if slugify(name) in classes:
            where = "--background" if name in (args.background or []) else f"{args.config}"
            raise ConfigError(f"{where}: background {name!r} is also a class of the dataset")
    return adhoc_label_set(
        dataset.name, dataset.classes, templates=templates, background=background, flag="--template"
    )


@dataclass(frozen=True)
class _Embedded:
    embeddings: np.ndarray  # (windows, dim)
    clip_starts: np.ndarray  # index of each evaluated clip's first window
    clips: list[LabelledClip]  # evaluated, in order
    failed: list[tuple[str, str]]  # (filename, reason)


def _embed_clips(runner: ClapRunner, clips: Sequence[LabelledClip], options: _Options) -> _Embedded:
    """Decode, window and embed every clip, a batch at a time; unreadable clips are skipped.

    Only about one batch of windows is held in memory, whatever the size of the dataset.
    """
    parts: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    starts: list[int] = []
    evaluated: list[LabelledClip] = []
    failed: list[tuple[str, str]] = []
    n_windows = 0
    # One window per clip is the usual case (ESC-50: 5 s clips); the total grows as needed.
    with progress(len(clips), "eval") as bar:

        def embed(count: int) -> None:
            parts.append(
                embed_in_batches(
                    runner.embed_audio, pending[:count], options.batch_size, bar.update
                )
            )
            del pending[:count]

        for clip in clips:
            try:
                decoded = clip.load()
            except SourceError as err:
                logger.warning("skipping %s: %s", clip.filename, err)
                failed.append((clip.filename, str(err)))
                bar.total -= 1
                bar.refresh()
                continue
            windows = clip_windows(decoded.samples, options.window_seconds, options.hop_seconds)
            bar.total += len(windows) - 1
            starts.append(n_windows)
            n_windows += len(windows)
            evaluated.append(clip)
            pending.extend(w.samples for w in windows)
            if len(pending) >= options.batch_size:
                embed(len(pending) // options.batch_size * options.batch_size)
        if pending:
            embed(len(pending))
    embeddings = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    return _Embedded(embeddings, np.asarray(starts, dtype=np.int64), evaluated, failed)


def config_threshold(point: OperatingPoint, scores: np.ndarray, positives: np.ndarray) -> float:
    """The threshold as written into a config: rounded down to a few significant digits when
    that selects exactly the same clips, else the exact score."""
    t = point.threshold
    if t <= 0:
        return 0.0
    scale = 10.0 ** (math.floor(math.log10(t)) - THRESHOLD_DIGITS + 1)
    rounded = float(f"{math.floor(t / scale) * scale:.{THRESHOLD_DIGITS}g}")
    at_rounded = operating_point(scores, positives, rounded)
    same = (at_rounded.true_positives, at_rounded.false_positives) == (
        point.true_positives,
        point.false_positives,
    )
    return rounded if same and rounded <= t else t


@dataclass(frozen=True)
class _ModeResult:
    mode: ScoringMode
    metrics: ClassificationMetrics
    config_thresholds: list[float | None]
    predicted: np.ndarray  # top-1 class of each clip


def _evaluate_mode(
    scorer: LabelSetScorer, embedded: _Embedded, truth: np.ndarray, options: _Options
) -> _ModeResult:
    window_scores = scorer.score(embedded.embeddings)
    scores = pool_windows(window_scores, embedded.clip_starts, options.aggregate)
    metrics = classification_metrics(scores, truth, options.target_precision)
    config_thresholds = [
        config_threshold(point, scores[:, c], truth == c) if point is not None else None
        for c, point in enumerate(metrics.thresholds)
    ]
    return _ModeResult(scorer.mode, metrics, config_thresholds, top1_predictions(scores, truth))


def _suggested(
    point: OperatingPoint | None, config_value: float | None
) -> SuggestedThreshold | None:
    if point is None or config_value is None:
        return None
    return SuggestedThreshold(
        threshold=point.threshold,
        config_threshold=config_value,
        precision=point.precision,
        recall=point.recall,
        true_positives=point.true_positives,
        false_positives=point.false_positives,
        positives=point.positives,
    )


def _mode_report(result: _ModeResult, labels: Sequence[str]) -> ModeReport:
    """One mode's metrics keyed by label name."""
    m = result.metrics
    return ModeReport(
        top1=m.top1,
        top5=m.top5,
        top5_k=min(5, len(labels)),
        mAP=m.mean_average_precision,
        per_class_accuracy=dict(zip(labels, m.per_class_accuracy, strict=True)),
        support=dict(zip(labels, m.support, strict=True)),
        confusion_matrix=ConfusionMatrix(
            labels=tuple(labels), counts=tuple(tuple(int(n) for n in row) for row in m.confusion)
        ),
        average_precision=dict(zip(labels, m.average_precision, strict=True)),
        thresholds={
            label: _suggested(point, value)
            for label, point, value in zip(
                labels, m.thresholds, result.config_thresholds, strict=True
            )
        },
    )


def _write(path: Path, content: str | bytes) -> None:
    try:
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot write ({err.strerror})") from err


def run_eval(args: argparse.Namespace) -> int:
    """The eval command: one embedding pass, every scoring mode scored on it, reports in --out."""
    started = time.monotonic()
    started_at = datetime.now(timezone.utc)
    options = _options(args)
    config = config_from_args(args)
    dataset = open_dataset(str(args.dataset))
    selected = dataset.select(options.folds, options.limit)
    label_set = _label_set(dataset, args, config)
    require_matplotlib()
    out = output_dir(Path(args.out))
    model_config = model_from_args(args, config)
    runner = load_clap(model_config)
    loaded = time.monotonic()
    scorer = LabelSetScorer.build(label_set, runner.embed_text, runner.logit_scale)
    logger.info(
        "evaluating %d clips of %s against %d classes",
        len(selected),
        dataset.source,
        len(dataset.classes),
    )
    embedded = _embed_clips(runner, selected, options)
    embedded_at = time.monotonic()
    if not embedded.clips:
        first = embedded.failed[0][1] if embedded.failed else "no clips"
        raise SourceError(
            f"--dataset {dataset.source}: none of the {len(selected)} clips could be read "
            f"(first: {first})"
        )
    truth = np.array([dataset.class_index(clip) for clip in embedded.clips], dtype=np.int64)
    results = [_evaluate_mode(scorer.with_mode(mode), embedded, truth, options) for mode in MODES]
    labels = tuple(label.name for label in label_set.labels)
    report = EvalReport(
        dataset=DatasetSummary(
            source=dataset.source,
            kind=dataset.kind,
            name=dataset.name,
            folds=tuple(options.folds) if options.folds else None,
            limit=options.limit,
            classes=labels,
            targets=dataset.targets,
            clips_selected=len(selected),
            clips_evaluated=len(embedded.clips),
            clips_failed=len(embedded.failed),
        ),
        failed_clips=tuple(FailedClip(f, r) for f, r in embedded.failed),
        model=ModelSummary(name=model_config.name, revision=model_config.revision),
        templates=tuple(label_set.prompt_template),
        background=tuple(label_set.background),
        background_used_by=MODES if label_set.background else (),
        aggregate=options.aggregate,
        window_seconds=options.window_seconds,
        hop_seconds=options.hop_seconds,
        windows=len(embedded.embeddings),
        target_precision=options.target_precision,
        tie_rule=TIE_RULE,
        modes={r.mode: _mode_report(r, labels) for r in results},
        clips=tuple(
            ClipOutcome(
                filename=clip.filename,
                fold=clip.fold,
                class_=labels[t],
                predicted={r.mode: labels[int(r.predicted[i])] for r in results},
            )
            for i, (clip, t) in enumerate(zip(embedded.clips, truth, strict=True))
        ),
        timing=Timing(
            started_at=started_at.isoformat(timespec="seconds"),
            setup_seconds=round(loaded - started, 3),
            embedding_seconds=round(embedded_at - loaded, 3),
            total_seconds=round(time.monotonic() - started, 3),
        ),
    )
    written = [out / "report.json", out / "report.md", out / "confusion_matrix.png"]
    _write(written[0], json_text(as_json(report)))
    _write(written[1], markdown(report))
    _write(written[2], confusion_png(report))
    for mode in report.modes:
        path = out / f"thresholds-{mode}.yaml"
        _write(path, thresholds_yaml(report, mode))
        written.append(path)
    print(summary_table(report))
    print(
        f"{report.dataset.clips_evaluated} clips evaluated, "
        f"{report.dataset.clips_failed} could not be read, "
        f"{len(labels)} classes, {report.windows} windows"
    )
    for path in written:
        print(f"wrote {path}")
    return EXIT_OK
