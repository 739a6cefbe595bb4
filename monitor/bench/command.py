"""`audio-monitor bench`: its arguments checked, the comparison or a replay run and printed."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from monitor.bench.checkpoint import RANDOM_NOTE, resolve_checkpoint
from monitor.bench.compare import run_compare
from monitor.bench.replay import parse_mqtt, run_replay
from monitor.bench.report import format_replay, format_sources, format_table
from monitor.bench.results import CompareReport, ReplayReport, SourcesReport
from monitor.bench.sources import run_sources
from monitor.bench.workload import bench_labels
from monitor.config import MAX_WINDOW_SECONDS
from monitor.errors import EXIT_FAILURE, EXIT_OK, ConfigError
from monitor.model.runtime import prepare_for_inference

logger = logging.getLogger(__name__)


def check_args(args: argparse.Namespace) -> None:
    """Every argument in range before anything loads; a ConfigError names the first that is not."""
    if args.labels < 2:
        raise ConfigError(f"--labels: at least 2 (got {args.labels}); a softmax over 1 is always 1")
    if args.windows < 1:
        raise ConfigError(f"--windows: at least 1 (got {args.windows})")
    if not 0 < args.window_seconds <= MAX_WINDOW_SECONDS:
        raise ConfigError(
            f"--window-seconds: must be in (0, {MAX_WINDOW_SECONDS:g}] "
            f"(got {args.window_seconds:g})"
        )
    hop = getattr(args, "hop_seconds", None)
    if hop is not None and not 0 < hop <= 3600:
        raise ConfigError(f"--hop-seconds: must be in (0, 3600] (got {hop:g})")
    if not 1 <= args.batch <= 64:
        raise ConfigError(f"--batch: must be 1..64 (got {args.batch})")
    if args.threads < 0:
        raise ConfigError(f"--threads: must be 0 (default) or more (got {args.threads})")
    if args.replay_minutes is not None and args.replay_minutes <= 0:
        raise ConfigError(f"--replay-minutes: must be positive (got {args.replay_minutes:g})")
    if args.mqtt and args.replay_minutes is None:
        raise ConfigError("--mqtt is only used with --replay-minutes")
    if getattr(args, "soundscape", None) is not None:
        if args.replay_minutes is None:
            raise ConfigError("--soundscape is only used with --replay-minutes")
        if args.audio is not None:
            raise ConfigError("--soundscape and --audio: give one of them")
    if getattr(args, "change_gate", ["off"]) != ["off"] and args.replay_minutes is None:
        raise ConfigError("--change-gate is only used with --replay-minutes")
    sources = getattr(args, "sources", None)
    if sources is not None:
        if args.replay_minutes is None:
            raise ConfigError("--sources is only used with --replay-minutes")
        if min(sources) < 1:
            raise ConfigError(f"--sources: each K must be at least 1 (got {min(sources)})")
    parse_mqtt(args.mqtt)


def run_bench(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`audio-monitor bench`: 0 when every path ran, 1 when one of them failed."""
    out = out or sys.stdout
    days = getattr(args, "history_days", None)
    if days is not None:
        return _run_history(days, args.json, out)
    check_args(args)
    # One BLAS thread: numpy's pool spinning after a matmul slows the next torch call.
    prepare_for_inference()
    labels = bench_labels(args.labels)
    checkpoint = resolve_checkpoint(args.model)
    if checkpoint.random_weights:
        logger.warning("%s (%s)", RANDOM_NOTE, checkpoint.path)
    report: CompareReport | ReplayReport | SourcesReport
    with tempfile.TemporaryDirectory(prefix="audio-monitor-bench-") as tmp:
        if args.replay_minutes is not None and getattr(args, "sources", None) is not None:
            report = run_sources(args, checkpoint, labels, Path(tmp))
            text = format_sources(report)
        elif args.replay_minutes is not None:
            report = run_replay(args, checkpoint, labels, Path(tmp))
            text = format_replay(report)
        else:
            report = run_compare(args, checkpoint, labels, Path(tmp))
            text = format_table(report)
    out.write(json.dumps(report.as_json(), indent=2) + "\n" if args.json else text)
    out.flush()
    return EXIT_OK if report.ok else EXIT_FAILURE


def _run_history(days: float, as_json: bool, out: TextIO) -> int:
    """`bench --history-days`: no model; the history writer and the search path."""
    from monitor.bench.history import run_history_bench
    from monitor.bench.report import format_history

    if not 0 < days <= 366:
        raise ConfigError(f"--history-days: must be in (0, 366] (got {days:g})")
    with tempfile.TemporaryDirectory(prefix="audio-monitor-bench-history-") as tmp:
        report = run_history_bench(days, Path(tmp))
    out.write(json.dumps(report.as_json(), indent=2) + "\n" if as_json else format_history(report))
    out.flush()
    return EXIT_OK
