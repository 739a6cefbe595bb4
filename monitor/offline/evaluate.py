"""`audio-monitor eval`: zero-shot accuracy of label prompts on a labelled dataset (ESC-50)."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from monitor.audio.decode import MAX_WINDOW_SECONDS, Clip, clip_windows, load_clip
from monitor.audio.resample import MODEL_SAMPLE_RATE_HZ, resample_to
from monitor.audio.windowing import to_mono
from monitor.config import Config, LabelSetConfig, ScoringMode, looks_like_path, slugify
from monitor.errors import EXIT_OK, ConfigError, SourceError, first_line
from monitor.model.runner import ClapRunner, load_clap
from monitor.offline.common import (
    adhoc_label_set,
    config_from_args,
    embed_in_batches,
    model_from_args,
    output_dir,
    progress,
)
from monitor.offline.metrics import (
    ClassificationMetrics,
    OperatingPoint,
    classification_metrics,
    operating_point,
    pool_windows,
    top1_predictions,
)
from monitor.pipeline.scoring import LabelSetScorer

log = logging.getLogger(__name__)

MODES: tuple[ScoringMode, ...] = ("softmax", "absolute")
ESC50_CSV = Path("meta") / "esc50.csv"
ESC50_AUDIO = Path("audio")
REQUIRED_COLUMNS = ("filename", "fold", "target", "category")
DEFAULT_SET_NAME = "esc50"
INSTALL_DATASETS = "pip install 'audio-monitor[datasets]'"
INSTALL_EVAL = "pip install 'audio-monitor[eval]'"
THRESHOLD_DIGITS = 4  # significant digits of a suggested threshold in the YAML snippet
NEVER_DETECTED = 1.0


@dataclass(frozen=True)
class LabelledClip:
    """One row of the dataset: which file, its fold and class, and how to decode it."""

    filename: str
    fold: int
    target: int
    category: str
    load: Callable[[], Clip] = field(repr=False, compare=False)


@dataclass(frozen=True)
class LabelledDataset:
    """A labelled dataset: its classes (ordered by target) and every row, sorted by filename."""

    source: str
    kind: Literal["directory", "hub"]
    name: str  # slug for the suggested label set's name
    targets: tuple[int, ...]
    classes: tuple[str, ...]  # label names: the categories with '_' -> ' '
    clips: tuple[LabelledClip, ...]

    def select(self, folds: Sequence[int] | None, limit: int | None) -> list[LabelledClip]:
        """The rows of these folds (all when None), the first `limit` of them by filename."""
        chosen = list(self.clips)
        if folds:
            wanted = set(folds)
            present = {clip.fold for clip in self.clips}
            chosen = [clip for clip in chosen if clip.fold in wanted]
            if not chosen:
                have = ", ".join(str(f) for f in sorted(present))
                raise ConfigError(
                    f"--folds {' '.join(str(f) for f in folds)}: no clips in these folds "
                    f"(the dataset has folds {have})"
                )
            for fold in sorted(wanted - present):
                log.warning("--folds: fold %d has no clips in %s", fold, self.source)
        return chosen[:limit] if limit is not None else chosen

    def class_index(self, clip: LabelledClip) -> int:
        return self.targets.index(clip.target)


def open_dataset(spec: str) -> LabelledDataset:
    """A directory in the ESC-50 layout, else a Hugging Face dataset id (needs `datasets`)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return read_esc50_directory(path)
    if path.exists():
        raise ConfigError(
            f"--dataset {spec}: is a file; expected a directory in the ESC-50 layout "
            "(meta/esc50.csv and audio/) or a Hugging Face dataset id"
        )
    if looks_like_path(spec):
        raise ConfigError(f"--dataset {spec}: no such directory")
    return read_hub_dataset(spec)


def _class_names(rows: Sequence[tuple[int, str]], where: str) -> tuple[tuple[int, ...], list[str]]:
    """Targets in ascending order and their label names, checked to be one-to-one."""
    by_target: dict[int, str] = {}
    for target, category in rows:
        known = by_target.setdefault(target, category)
        if known != category:
            raise ConfigError(
                f"{where}: target {target} is both {known!r} and {category!r}; "
                "each target needs one category"
            )
    targets = tuple(sorted(by_target))
    names = [by_target[t].replace("_", " ").strip() for t in targets]
    seen: dict[str, int] = {}
    for target, name in zip(targets, names, strict=True):
        if not slugify(name):
            raise ConfigError(f"{where}: category of target {target} has no letter or digit")
        if slugify(name) in seen:
            raise ConfigError(
                f"{where}: targets {seen[slugify(name)]} and {target} have the same "
                f"category {name!r}"
            )
        seen[slugify(name)] = target
    return targets, names


def _build_dataset(
    source: str,
    kind: Literal["directory", "hub"],
    name: str,
    rows: Sequence[tuple[str, int, int, str, Callable[[], Clip]]],
) -> LabelledDataset:
    if not rows:
        raise ConfigError(f"--dataset {source}: lists no clips")
    targets, classes = _class_names([(r[2], r[3]) for r in rows], source)
    clips = sorted((LabelledClip(*row) for row in rows), key=lambda clip: clip.filename)
    return LabelledDataset(
        source=source,
        kind=kind,
        name=name or DEFAULT_SET_NAME,
        targets=targets,
        classes=tuple(classes),
        clips=tuple(clips),
    )


def read_esc50_directory(directory: Path) -> LabelledDataset:
    """meta/esc50.csv (filename, fold, target, category, ...) and the clips in audio/."""
    csv_path = directory / ESC50_CSV
    audio_dir = directory / ESC50_AUDIO
    if not csv_path.is_file():
        raise ConfigError(
            f"--dataset {directory}: no {ESC50_CSV.as_posix()} (the ESC-50 layout is "
            "meta/esc50.csv listing filename,fold,target,category and the clips in audio/)"
        )
    if not audio_dir.is_dir():
        raise ConfigError(f"--dataset {directory}: no audio/ directory next to meta/")
    try:
        with csv_path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(f"{csv_path}: missing column(s) {', '.join(missing)}")
            records = list(reader)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{csv_path}: not UTF-8 text ({err.reason})") from err
    except (OSError, csv.Error) as err:
        raise ConfigError(f"{csv_path}: cannot read ({first_line(err)})") from err
    rows = []
    for line, record in enumerate(records, start=2):
        filename = (record["filename"] or "").strip()
        category = (record["category"] or "").strip()
        try:
            fold, target = int(record["fold"]), int(record["target"])
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{csv_path}: line {line}: fold and target must be integers") from err
        if not filename or not category:
            raise ConfigError(f"{csv_path}: line {line}: empty filename or category")
        rows.append((filename, fold, target, category, partial(load_clip, audio_dir / filename)))
    return _build_dataset(str(directory), "directory", slugify(directory.resolve().name), rows)


def read_hub_dataset(dataset_id: str) -> LabelledDataset:
    """A Hugging Face dataset with ESC-50's columns (e.g. ashraq/esc50), its "train" split."""
    if importlib.util.find_spec("datasets") is None:
        raise ConfigError(
            f"--dataset {dataset_id}: not a local directory, and reading a Hugging Face "
            f"dataset needs the optional `datasets` package: {INSTALL_DATASETS}"
        )
    import datasets

    try:
        loaded: Any = datasets.load_dataset(dataset_id)
    except Exception as err:
        raise SourceError(
            f"--dataset {dataset_id}: cannot load it from the Hugging Face hub ({first_line(err)})"
        ) from err
    split: Any = loaded
    if isinstance(loaded, datasets.DatasetDict):
        split = loaded["train"] if "train" in loaded else loaded[sorted(loaded)[0]]
    missing = [c for c in (*REQUIRED_COLUMNS, "audio") if c not in split.column_names]
    if missing:
        raise ConfigError(f"--dataset {dataset_id}: missing column(s) {', '.join(missing)}")
    # Undecoded bytes, read with libsndfile like local clips: datasets' own decoder differs
    # between releases (and may need extra packages).
    split = split.cast_column("audio", datasets.Audio(decode=False))
    meta = split.select_columns(list(REQUIRED_COLUMNS)).to_dict()
    rows = []
    for i, filename in enumerate(meta["filename"]):
        load = partial(_hub_clip, split, i, str(filename))
        rows.append(
            (str(filename), int(meta["fold"][i]), int(meta["target"][i]), meta["category"][i], load)
        )
    return _build_dataset(dataset_id, "hub", slugify(dataset_id.rpartition("/")[2]), rows)


def _hub_clip(split: Any, index: int, filename: str) -> Clip:
    try:
        audio = split[index]["audio"]
    except Exception as err:
        raise SourceError(f"{filename}: cannot read the row ({first_line(err)})") from err
    return clip_from_hub_audio(filename, audio)


def clip_from_hub_audio(filename: str, audio: Mapping[str, Any]) -> Clip:
    """A Clip from a datasets Audio value: decoded {array, sampling_rate} or {bytes, path}."""
    if audio.get("array") is not None:
        return _clip_from_array(filename, audio["array"], audio.get("sampling_rate"))
    if audio.get("bytes"):
        with tempfile.TemporaryDirectory(prefix="audio-monitor-eval-") as tmp:
            path = Path(tmp) / ("clip" + Path(filename).suffix)
            path.write_bytes(audio["bytes"])
            try:
                clip = load_clip(path)
            except SourceError as err:
                raise SourceError(str(err).replace(str(path), filename)) from err
        return replace(clip, path=Path(filename))
    if audio.get("path") and Path(audio["path"]).is_file():
        return replace(load_clip(Path(audio["path"])), path=Path(filename))
    raise SourceError(f"{filename}: the dataset row holds no audio")


def _clip_from_array(filename: str, array: Any, rate: Any) -> Clip:
    data = np.asarray(array, dtype=np.float32)
    if rate is None or int(rate) <= 0:
        raise SourceError(f"{filename}: no sampling rate")
    if data.ndim == 2 and data.shape[0] < data.shape[1]:
        data = data.T  # (channels, frames) -> (frames, channels)
    if data.ndim not in (1, 2) or data.shape[0] == 0:
        raise SourceError(f"{filename}: contains no audio (shape {data.shape})")
    if not np.isfinite(data).all():
        raise SourceError(f"{filename}: samples are NaN or infinite")
    channels = 1 if data.ndim == 1 else int(data.shape[1])
    samples = resample_to(to_mono(data), int(rate), MODEL_SAMPLE_RATE_HZ)
    return Clip(Path(filename), samples, int(rate), channels)


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


def _require_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(f"eval draws its confusion matrix with matplotlib: {INSTALL_EVAL}")


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
                log.warning("skipping %s: %s", clip.filename, err)
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


def _point_json(point: OperatingPoint | None, config_value: float | None) -> dict[str, Any] | None:
    if point is None:
        return None
    return {
        "threshold": point.threshold,
        "config_threshold": config_value,
        "precision": point.precision,
        "recall": point.recall,
        "true_positives": point.true_positives,
        "false_positives": point.false_positives,
        "positives": point.positives,
    }


def _mode_json(result: _ModeResult, labels: Sequence[str]) -> dict[str, Any]:
    m = result.metrics
    return {
        "top1": m.top1,
        "top5": m.top5,
        "top5_k": min(5, len(labels)),
        "mAP": m.mean_average_precision,
        "per_class_accuracy": dict(zip(labels, m.per_class_accuracy, strict=True)),
        "support": dict(zip(labels, m.support, strict=True)),
        "confusion_matrix": {"labels": list(labels), "counts": m.confusion.tolist()},
        "average_precision": dict(zip(labels, m.average_precision, strict=True)),
        "thresholds": {
            label: _point_json(point, value)
            for label, point, value in zip(
                labels, m.thresholds, result.config_thresholds, strict=True
            )
        },
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown(report: dict[str, Any], results: Sequence[_ModeResult]) -> str:
    ds = report["dataset"]
    labels: list[str] = ds["classes"]
    modes = [r.mode for r in results]
    target = report["target_precision"]
    folds = ", ".join(str(f) for f in ds["folds"]) if ds["folds"] else "all"
    background = report["background"]
    lines = [
        f"# Zero-shot evaluation on {_md(ds['name'])}",
        "",
        f"- Dataset: `{ds['source']}` ({ds['kind']}), folds: {folds}"
        + (f", first {ds['limit']} clips by filename" if ds["limit"] else ""),
        f"- Clips: {ds['clips_evaluated']} evaluated, {ds['clips_failed']} could not be read, "
        f"{len(labels)} classes",
        f"- Model: `{report['model']['name']}`",
        "- Prompt template(s): " + ", ".join(f"`{t}`" for t in report["templates"]),
        "- Background labels: "
        + (
            ", ".join(f"`{b}`" for b in background) + " (used by both modes, never predicted)"
            if background
            else "none"
        ),
        f"- Clip score: {report['aggregate']} over {report['window_seconds']:g} s windows "
        f"(hop {report['hop_seconds']:g} s), {report['windows']} windows",
        "",
        "## Summary",
        "",
        "| | " + " | ".join(modes) + " |",
        "|---|" + "---:|" * len(modes),
    ]
    k = report["modes"][modes[0]]["top5_k"]
    reached = [sum(p is not None for p in r.metrics.thresholds) for r in results]
    lines += [
        "| top-1 accuracy | " + " | ".join(_fmt(r.metrics.top1) for r in results) + " |",
        f"| top-{k} accuracy | " + " | ".join(_fmt(r.metrics.top5) for r in results) + " |",
        "| mAP (macro AP) | "
        + " | ".join(_fmt(r.metrics.mean_average_precision) for r in results)
        + " |",
        f"| classes reaching precision {target:g} | "
        + " | ".join(f"{n}/{len(labels)}" for n in reached)
        + " |",
        "",
        "Top-1/top-k accuracy and the confusion matrix depend only on how the labels rank for "
        "each clip. Within one window both modes rank the labels alike, so these can differ "
        "only through ties (absolute mode without background clips negative similarities to "
        "0) or when a clip's windows are pooled. The modes differ in how well one fixed "
        "threshold per label separates its clips from the rest: AP and the thresholds below. "
        "A tie between the true class and another counts as a miss.",
        "",
        "## Per class",
        "",
        "| class | clips | "
        + " | ".join(f"top-1 acc ({m})" for m in modes)
        + " | "
        + " | ".join(f"AP ({m})" for m in modes)
        + " |",
        "|---|---:|" + "---:|" * (2 * len(modes)),
    ]
    for c, label in enumerate(labels):
        accs = [_fmt(r.metrics.per_class_accuracy[c]) for r in results]
        aps = [_fmt(r.metrics.average_precision[c]) for r in results]
        support = results[0].metrics.support[c]
        lines.append(f"| {_md(label)} | {support} | " + " | ".join(accs + aps) + " |")
    lines += [
        "",
        f"## Suggested thresholds (precision >= {target:g})",
        "",
        "The lowest score at which a label reaches the target precision one-vs-rest over these "
        "clips (detected = score >= threshold), with the recall it gives; `-` = not reached. "
        "As config snippets: "
        + ", ".join(f"`thresholds-{m}.yaml`" for m in modes)
        + " next to this report.",
        "",
        "| class | " + " | ".join(f"{m} threshold | precision | recall" for m in modes) + " |",
        "|---|" + "---:|" * (3 * len(modes)),
    ]
    for c, label in enumerate(labels):
        cells = []
        for r in results:
            point = r.metrics.thresholds[c]
            value = r.config_thresholds[c]
            if point is None or value is None:
                cells += ["-", "-", "-"]
            else:
                cells += [
                    f"{value:.{THRESHOLD_DIGITS}g}",
                    _fmt(point.precision),
                    _fmt(point.recall),
                ]
        lines.append(f"| {_md(label)} | " + " | ".join(cells) + " |")
    lines += ["", "## Confusion matrix", "", "![Confusion matrix](confusion_matrix.png)", ""]
    if report["failed_clips"]:
        lines += ["## Clips that could not be read", ""]
        lines += [f"- `{f['filename']}`: {_md(f['reason'])}" for f in report["failed_clips"]]
        lines.append("")
    return "\n".join(lines)


def _yaml_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def thresholds_yaml(
    result: _ModeResult, label_set: LabelSetConfig, dataset: LabelledDataset, target: float
) -> str:
    """A `label_sets:` snippet for a config, with the suggested threshold of each label."""
    templates = ", ".join(_yaml_str(t) for t in label_set.prompt_template)
    background = ", ".join(_yaml_str(b) for b in label_set.background)
    lines = [
        f"# Thresholds suggested by `audio-monitor eval` on {dataset.source}",
        f"# ({result.mode} mode): per label, the lowest score with precision >= {target:g}",
        "# over the evaluated clips.",
        "# Paste into a config (merge with its label_sets) and check them on your own audio.",
        "label_sets:",
        f"  - name: {_yaml_str(label_set.name)}",
        f"    mode: {result.mode}",
        f"    prompt_template: [{templates}]",
        f"    background: [{background}]",
        "    labels:",
    ]
    for c, label in enumerate(label_set.labels):
        point = result.metrics.thresholds[c]
        value = result.config_thresholds[c]
        lines.append(f"      - name: {_yaml_str(label.name)}")
        if point is None or value is None:
            why = "no clip of this class" if result.metrics.support[c] == 0 else "not reached"
            lines.append(
                f"        threshold: {NEVER_DETECTED}  # precision {target:g} {why}: "
                "never detected; choose one by hand"
            )
        else:
            lines.append(
                f"        threshold: {value!r}  # precision {point.precision:.3f}, "
                f"recall {point.recall:.3f} ({point.true_positives}/{point.positives} clips)"
            )
    return "\n".join(lines) + "\n"


def write_confusion_png(
    path: Path, labels: Sequence[str], matrices: Mapping[str, np.ndarray], title: str
) -> None:
    """The confusion matrices (one panel per distinct matrix): counts in cells, rows coloured
    by the fraction of the true class."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ConfigError(
            f"eval draws its confusion matrix with matplotlib: {INSTALL_EVAL}"
        ) from err

    # Modes rank labels alike within a window, so their matrices usually match: draw it once.
    panels: list[tuple[list[str], np.ndarray]] = []
    for mode, matrix in matrices.items():
        same = next((p for p in panels if np.array_equal(p[1], matrix)), None)
        if same is None:
            panels.append(([mode], matrix))
        else:
            same[0].append(mode)
    n = len(labels)
    side = max(5.0, 0.5 * n + 2.5)
    font = 10  # the figure grows with the classes, so cells always fit this size
    figure = Figure(figsize=(side * len(panels) + 1.0, side), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (modes, matrix) in zip(axes, panels, strict=True):
        support = matrix.sum(axis=1, keepdims=True)
        fraction = np.divide(matrix, support, out=np.zeros(matrix.shape), where=support > 0)
        image = ax.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=font)
        ax.set_yticks(range(n), labels, fontsize=font)
        ax.set_xlabel("predicted (top-1)")
        ax.set_ylabel("true class")
        name = " and ".join(modes) + (" modes (the same matrix)" if len(modes) > 1 else " mode")
        ax.set_title(name, fontsize=font + 1)
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    colour = "white" if fraction[i, j] > 0.5 else "black"
                    ax.text(
                        j,
                        i,
                        str(matrix[i, j]),
                        ha="center",
                        va="center",
                        color=colour,
                        fontsize=font,
                    )
    figure.colorbar(image, ax=list(axes), shrink=0.8, label="fraction of the true class")
    figure.suptitle(title)
    try:
        figure.savefig(path, dpi=100)
    except OSError as err:
        raise ConfigError(f"{path}: cannot write ({err.strerror})") from err


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot write ({err.strerror})") from err


def _summary_table(results: Sequence[_ModeResult], n_classes: int) -> str:
    rows = [("mode", "top-1", f"top-{min(5, n_classes)}", "mAP")]
    rows += [
        (
            r.mode,
            _fmt(r.metrics.top1),
            _fmt(r.metrics.top5),
            _fmt(r.metrics.mean_average_precision),
        )
        for r in results
    ]
    return "\n".join(f"{a:<10} {b:>6} {c:>6} {d:>6}" for a, b, c, d in rows)


def run_eval(args: argparse.Namespace) -> int:
    """The eval command: one embedding pass, every scoring mode scored on it, reports in --out."""
    started = time.monotonic()
    started_at = datetime.now(timezone.utc)
    options = _options(args)
    config = config_from_args(args)
    dataset = open_dataset(str(args.dataset))
    selected = dataset.select(options.folds, options.limit)
    label_set = _label_set(dataset, args, config)
    _require_matplotlib()
    out = output_dir(Path(args.out))
    model_config = model_from_args(args, config)
    runner = load_clap(model_config)
    loaded = time.monotonic()
    scorer = LabelSetScorer.build(label_set, runner.embed_text, runner.logit_scale)
    log.info(
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
    labels = [label.name for label in label_set.labels]
    report: dict[str, Any] = {
        "dataset": {
            "source": dataset.source,
            "kind": dataset.kind,
            "name": dataset.name,
            "folds": options.folds,
            "limit": options.limit,
            "classes": labels,
            "targets": list(dataset.targets),
            "clips_selected": len(selected),
            "clips_evaluated": len(embedded.clips),
            "clips_failed": len(embedded.failed),
        },
        "failed_clips": [{"filename": f, "reason": r} for f, r in embedded.failed],
        "model": {"name": model_config.name, "revision": model_config.revision},
        "templates": list(label_set.prompt_template),
        "background": list(label_set.background),
        "background_used_by": list(MODES) if label_set.background else [],
        "aggregate": options.aggregate,
        "window_seconds": options.window_seconds,
        "hop_seconds": options.hop_seconds,
        "windows": len(embedded.embeddings),
        "target_precision": options.target_precision,
        "tie_rule": "a tie between the true class and another counts as a miss",
        "modes": {r.mode: _mode_json(r, labels) for r in results},
        "clips": [
            {
                "filename": clip.filename,
                "fold": clip.fold,
                "class": labels[t],
                "predicted": {r.mode: labels[int(r.predicted[i])] for r in results},
            }
            for i, (clip, t) in enumerate(zip(embedded.clips, truth, strict=True))
        ],
        "timing": {
            "started_at": started_at.isoformat(timespec="seconds"),
            "setup_seconds": round(loaded - started, 3),
            "embedding_seconds": round(embedded_at - loaded, 3),
            "total_seconds": round(time.monotonic() - started, 3),
        },
    }
    written = [out / "report.json", out / "report.md", out / "confusion_matrix.png"]
    _write_text(written[0], json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    _write_text(written[1], _markdown(report, results))
    write_confusion_png(
        written[2],
        labels,
        {r.mode: r.metrics.confusion for r in results},
        f"Confusion matrix: {dataset.name}, {len(embedded.clips)} clips",
    )
    for r in results:
        path = out / f"thresholds-{r.mode}.yaml"
        _write_text(path, thresholds_yaml(r, label_set, dataset, options.target_precision))
        written.append(path)
    print(_summary_table(results, len(labels)))
    print(
        f"{len(embedded.clips)} clips evaluated, {len(embedded.failed)} could not be read, "
        f"{len(labels)} classes, {len(embedded.embeddings)} windows"
    )
    for path in written:
        print(f"wrote {path}")
    return EXIT_OK
