"""`audio-monitor classify`: score recorded files against label sets, offline (no MQTT)."""

from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO, cast

import numpy as np

from monitor.audio.decode import MAX_WINDOW_SECONDS, clip_windows, find_audio_files, load_clip
from monitor.config import Config, LabelSetConfig
from monitor.errors import EXIT_FAILURE, EXIT_OK, ConfigError, SourceError
from monitor.frames import top_labels
from monitor.model.runner import load_clap
from monitor.offline.common import (
    ADHOC_SET_NAME,
    adhoc_label_set,
    config_from_args,
    embed_in_batches,
    model_from_args,
    progress,
)
from monitor.offline.jsondoc import as_json, json_text
from monitor.pipeline.scoring import LabelSetScorer, build_scorers

logger = logging.getLogger(__name__)

Status = Literal["ok", "error", "skipped"]
Aggregate = Literal["max", "mean"]
SetScores = dict[str, dict[str, float]]  # label set -> label -> score
AudioEmbedder = Callable[[Sequence[np.ndarray]], np.ndarray]

SILENCE_MESSAGE = "digital silence"
CSV_COLUMNS = (
    "path",
    "status",
    "window",
    "start_seconds",
    "end_seconds",
    "label_set",
    "label",
    "score",
    "rank",
    "error",
)


@dataclass(frozen=True)
class ClassifyOptions:
    """How clips are cut into windows, batched and summarised."""

    window_seconds: float = MAX_WINDOW_SECONDS
    hop_seconds: float | None = None  # None = the window: consecutive windows
    aggregate: Aggregate = "max"
    batch_size: int = 8


@dataclass(frozen=True)
class WindowResult:
    """One window's scores for every label set."""

    index: int
    start_seconds: float
    end_seconds: float
    scores: SetScores


@dataclass(frozen=True)
class FileResult:
    """The outcome for one file: its windows and clip-level scores, or why there are none."""

    path: Path
    status: Status
    error: str | None = None
    duration_seconds: float | None = None
    source_rate_hz: int | None = None
    channels: int | None = None
    windows: tuple[WindowResult, ...] = ()
    clip: SetScores = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Label sets and options from the flags


def select_label_sets(args: argparse.Namespace, config: Config | None) -> list[LabelSetConfig]:
    """The ad-hoc --labels set, else the config's sets (filtered by --label-set)."""
    if args.labels:
        if args.label_set:
            raise ConfigError(
                "--label-set selects label sets of --config; it cannot be combined with --labels"
            )
        return [
            adhoc_label_set(
                ADHOC_SET_NAME,
                args.labels,
                templates=args.template,
                background=args.background,
                mode=args.mode,
            )
        ]
    if config is None:
        raise ConfigError(
            "nothing to classify against: give --labels L1 L2 ... or --config FILE with label_sets"
        )
    adhoc_only = [
        flag
        for flag, value in (
            ("--template", args.template),
            ("--background", args.background),
            ("--mode", args.mode),
        )
        if value
    ]
    if adhoc_only:
        raise ConfigError(
            f"{', '.join(adhoc_only)}: only for --labels; the label sets of {args.config} "
            "set their own templates, background and mode"
        )
    if not args.label_set:
        return list(config.label_sets)
    by_name = {s.name: s for s in config.label_sets}
    for name in args.label_set:
        if name not in by_name:
            raise ConfigError(
                f"--label-set: no label set {name!r} in {args.config}; "
                f"available: {', '.join(by_name)}"
            )
    wanted = set(args.label_set)
    return [s for s in config.label_sets if s.name in wanted]


def options_from_args(args: argparse.Namespace) -> ClassifyOptions:
    """Checked windowing and batching flags; ConfigError names the flag."""
    if not 0 < args.window_seconds <= MAX_WINDOW_SECONDS:
        raise ConfigError(
            f"--window-seconds: must be more than 0 and at most {MAX_WINDOW_SECONDS:g} "
            f"(got {args.window_seconds:g})"
        )
    if args.hop_seconds is not None and not args.hop_seconds > 0:
        raise ConfigError(f"--hop-seconds: must be more than 0 (got {args.hop_seconds:g})")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: must be at least 1 (got {args.batch_size})")
    if args.top_k < 1:
        raise ConfigError(f"--top-k: must be at least 1 (got {args.top_k})")
    return ClassifyOptions(
        window_seconds=args.window_seconds,
        hop_seconds=args.hop_seconds,
        aggregate=args.aggregate,
        batch_size=args.batch_size,
    )


# ---------------------------------------------------------------------------------------------
# Classification: files in order, windows batched across files


def aggregate_scores(window_scores: np.ndarray, how: Aggregate) -> np.ndarray:
    """Clip-level scores (labels,) from (windows, labels) scores."""
    out: np.ndarray = window_scores.max(axis=0) if how == "max" else window_scores.mean(axis=0)
    return out


def scored_result(
    path: Path,
    *,
    duration_seconds: float,
    source_rate_hz: int,
    channels: int,
    spans: Sequence[tuple[float, float]],
    embeddings: np.ndarray,
    scorers: Sequence[LabelSetScorer],
    aggregate: Aggregate,
) -> FileResult:
    """A file's result from its windows' (start, end) spans and audio embeddings."""
    per_set = {scorer.name: (scorer.labels, scorer.score(embeddings)) for scorer in scorers}

    def named(labels: Sequence[str], row: np.ndarray) -> dict[str, float]:
        return {label: float(score) for label, score in zip(labels, row, strict=True)}

    windows = tuple(
        WindowResult(
            index,
            start,
            end,
            {name: named(labels, scores[index]) for name, (labels, scores) in per_set.items()},
        )
        for index, (start, end) in enumerate(spans)
    )
    clip = {
        name: named(labels, aggregate_scores(scores, aggregate))
        for name, (labels, scores) in per_set.items()
    }
    return FileResult(
        path,
        "ok",
        duration_seconds=duration_seconds,
        source_rate_hz=source_rate_hz,
        channels=channels,
        windows=windows,
        clip=clip,
    )


def _error_text(path: Path, err: Exception) -> str:
    # load_clip's messages start with the path, which every output already shows.
    return str(err).removeprefix(f"{path}: ")


@dataclass
class _Pending:
    """A file whose windows are (partly) waiting for the model, or a finished result."""

    path: Path
    result: FileResult | None = None
    duration_seconds: float = 0.0
    source_rate_hz: int = 0
    channels: int = 0
    spans: list[tuple[float, float]] = field(default_factory=list)
    embeddings: list[np.ndarray | None] = field(default_factory=list)
    missing: int = 0


def _start(path: Path, options: ClassifyOptions) -> tuple[_Pending, list[np.ndarray]]:
    """Decode a file and cut its windows; a file that cannot be used is finished at once."""
    try:
        clip = load_clip(path)
    except SourceError as err:
        return _Pending(path, FileResult(path, "error", _error_text(path, err))), []
    except Exception as err:  # one undecodable file must not end the run for the others
        logger.debug("%s: unexpected error while decoding", path, exc_info=True)
        message = f"cannot decode ({type(err).__name__}: {err})"
        return _Pending(path, FileResult(path, "error", message)), []
    if clip.is_silent:
        # Silence has no content to classify; the model would still name "the best" label.
        result = FileResult(
            path,
            "skipped",
            SILENCE_MESSAGE,
            duration_seconds=clip.duration_seconds,
            source_rate_hz=clip.source_rate_hz,
            channels=clip.channels,
        )
        return _Pending(path, result), []
    windows = clip_windows(clip.samples, options.window_seconds, options.hop_seconds)
    pending = _Pending(
        path,
        duration_seconds=clip.duration_seconds,
        source_rate_hz=clip.source_rate_hz,
        channels=clip.channels,
        spans=[(w.start_seconds, w.end_seconds) for w in windows],
        embeddings=[None] * len(windows),
        missing=len(windows),
    )
    return pending, [w.samples for w in windows]


def classify_files(
    paths: Iterable[Path],
    scorers: Sequence[LabelSetScorer],
    embed_audio: AudioEmbedder,
    options: ClassifyOptions,
) -> Iterator[FileResult]:
    """Yield one result per path, in order, as soon as each file's windows are scored.

    Windows of consecutive files share forward passes of `batch_size` windows, and each
    window is embedded once whatever the number of label sets. Memory stays bounded: one
    decoded clip plus at most one batch of windows is held at a time.
    """
    queue: deque[_Pending] = deque()
    batch: list[tuple[_Pending, int, np.ndarray]] = []

    def run_batch() -> None:
        embeddings = embed_in_batches(
            embed_audio, [samples for _, _, samples in batch], options.batch_size
        )
        for (pending, index, _), embedding in zip(batch, embeddings, strict=True):
            pending.embeddings[index] = embedding
            pending.missing -= 1
        batch.clear()

    def finished() -> Iterator[FileResult]:
        while queue and (queue[0].result is not None or queue[0].missing == 0):
            pending = queue.popleft()
            if pending.result is not None:
                yield pending.result
                continue
            yield scored_result(
                pending.path,
                duration_seconds=pending.duration_seconds,
                source_rate_hz=pending.source_rate_hz,
                channels=pending.channels,
                spans=pending.spans,
                embeddings=np.stack(cast(list[np.ndarray], pending.embeddings)),
                scorers=scorers,
                aggregate=options.aggregate,
            )

    for path in paths:
        pending, windows = _start(path, options)
        queue.append(pending)
        for index, samples in enumerate(windows):
            batch.append((pending, index, samples))
            if len(batch) == options.batch_size:
                run_batch()
                yield from finished()
        # Views into the decoded clip: copy the few still waiting so the clip is freed now.
        batch[:] = [(p, i, np.array(w) if p is pending else w) for p, i, w in batch]
        del windows
        yield from finished()
    if batch:
        run_batch()
    yield from finished()


# ---------------------------------------------------------------------------------------------
# Output formats


def _seconds(value: float) -> str:
    return f"{value:.2f}"


def format_table(result: FileResult, top_k: int, aggregate: Aggregate = "max") -> str:
    """Human-readable lines for one file: header, top labels per set, one line per window."""
    if result.status == "error":
        return f"{result.path}: error: {result.error}\n"
    duration = f"{_seconds(result.duration_seconds or 0.0)} s"
    if result.status == "skipped":
        return f"{result.path}: skipped, {duration}: {result.error}\n"
    count = len(result.windows)
    header = f"{result.path}: ok, {duration}"
    if count > 1:
        header += f", {count} windows (clip score = {aggregate})"
    lines = [header]
    width = max((len(name) for name in result.clip), default=0) + 1
    for name, scores in result.clip.items():
        best = ", ".join(f"{label} {score:.3f}" for label, score in top_labels(scores, top_k))
        lines.append(f"  {name + ':':<{width}} {best}")
    if count > 1:
        spans = [f"{_seconds(w.start_seconds)}-{_seconds(w.end_seconds)} s" for w in result.windows]
        span_width = max(len(span) for span in spans)
        for window, span in zip(result.windows, spans, strict=True):
            tops = "  ".join(
                f"{name}: {label} {score:.3f}"
                for name, scores in window.scores.items()
                for label, score in top_labels(scores, 1)
            )
            lines.append(f"    {span:>{span_width}}  {tops}")
    return "\n".join(lines) + "\n"


def csv_rows(result: FileResult, top_k: int) -> list[list[Any]]:
    """CSV rows (CSV_COLUMNS) for one file: top-k labels per window and set, then the clip's."""
    if result.status != "ok":
        return [[str(result.path), result.status, "", "", "", "", "", "", "", result.error or ""]]
    rows: list[list[Any]] = []
    parts: list[tuple[Any, Any, Any, SetScores]] = [
        (w.index, w.start_seconds, w.end_seconds, w.scores) for w in result.windows
    ]
    parts.append(("clip", 0.0, result.duration_seconds, result.clip))
    for window, start, end, per_set in parts:
        for name, scores in per_set.items():
            for rank, (label, score) in enumerate(top_labels(scores, top_k), start=1):
                rows.append(
                    [str(result.path), "ok", window, start, end, name, label, score, rank, ""]
                )
    return rows


def json_file(result: FileResult, top_k: int) -> dict[str, Any]:
    """The JSON object of one file: its fields (a window's scores as `label_sets`), then `top`."""
    document = as_json(result, {"scores": "label_sets"})
    document["top"] = {
        name: [[label, score] for label, score in top_labels(scores, top_k)]
        for name, scores in result.clip.items()
    }
    return document


def json_document(
    files: Sequence[dict[str, Any]],
    *,
    model_id: str,
    label_sets: Sequence[LabelSetConfig],
    options: ClassifyOptions,
    top_k: int,
) -> str:
    """The whole JSON output: what was run, then one object per file."""
    document = {
        "model": model_id,
        "aggregate": options.aggregate,
        "window_seconds": options.window_seconds,
        "hop_seconds": options.hop_seconds
        if options.hop_seconds is not None
        else options.window_seconds,
        "top_k": top_k,
        "label_sets": {
            s.name: {
                "mode": s.mode,
                "labels": [label.name for label in s.labels],
                "background": list(s.background),
            }
            for s in label_sets
        },
        "files": list(files),
    }
    return json_text(document)


def _csv_text(rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# The command


def run_classify(args: argparse.Namespace) -> int:
    """`audio-monitor classify`: 0 when every file was classified (or skipped), 1 otherwise."""
    options = options_from_args(args)
    config = config_from_args(args)
    label_sets = select_label_sets(args, config)
    files = find_audio_files(args.paths)
    if not files:
        where = ", ".join(str(p) for p in args.paths)
        raise ConfigError(f"no audio files in {where}")
    runner = load_clap(model_from_args(args, config))
    scorers = build_scorers(label_sets, runner.embed_text, runner.logit_scale)
    logger.info(
        "classifying %d file(s) against %s with %s",
        len(files),
        ", ".join(s.name for s in label_sets),
        runner.model_id,
    )
    out: TextIO = sys.stdout
    if args.format == "csv":
        out.write(_csv_text([CSV_COLUMNS]))
    json_files: list[dict[str, Any]] = []
    failed: list[Path] = []
    counts = {"ok": 0, "error": 0, "skipped": 0}
    bar = progress(len(files), "classify", unit="file")
    try:
        for result in classify_files(files, scorers, runner.embed_audio, options):
            counts[result.status] += 1
            if result.status == "error":
                failed.append(result.path)
            if args.format == "json":
                json_files.append(json_file(result, args.top_k))
            else:
                text = (
                    format_table(result, args.top_k, options.aggregate)
                    if args.format == "table"
                    else _csv_text(csv_rows(result, args.top_k))
                )
                bar.clear()  # a bar on the same terminal would be overwritten mid-line
                out.write(text)
                out.flush()
            bar.update(1)
    finally:
        bar.close()
    if args.format == "json":
        out.write(
            json_document(
                json_files,
                model_id=runner.model_id,
                label_sets=label_sets,
                options=options,
                top_k=args.top_k,
            )
        )
        out.flush()
    logger.info(
        "%d file(s): %d classified, %d skipped, %d failed",
        len(files),
        counts["ok"],
        counts["skipped"],
        counts["error"],
    )
    if failed:
        shown = ", ".join(str(p) for p in failed[:5]) + (", ..." if len(failed) > 5 else "")
        logger.warning("%d file(s) could not be classified: %s", len(failed), shown)
        return EXIT_FAILURE
    return EXIT_OK
