"""`audio-monitor search`: its arguments checked, the texts embedded, the history scored."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from monitor.config import Config, ModelConfig, load_config
from monitor.errors import EXIT_OK, ConfigError, HistoryError
from monitor.history.paths import resolve_history_path
from monitor.history.store import HistoryStore
from monitor.model.textonly import load_text_model
from monitor.search.clips import ClipRef, covering, load_clips
from monitor.search.parallel import default_jobs, scan_history
from monitor.search.ranges import Range, above, best
from monitor.search.report import render
from monitor.search.results import DEFAULT_TOP, Match, SearchOptions, SearchReport
from monitor.search.scan import text_scorer
from monitor.search.timespec import parse_when

logger = logging.getLogger(__name__)


def options_from_args(args: argparse.Namespace, now_s: float) -> SearchOptions:
    """The options, each checked; ConfigError (exit 78) names the first bad one."""
    texts = tuple(t.strip() for t in args.texts)
    if not all(texts):
        raise ConfigError("search: every text must have a word in it")
    if args.threshold is not None and args.top is not None:
        raise ConfigError("give --threshold or --top, not both")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold: must be in [0, 1] (got {args.threshold:g})")
    if args.top is not None and args.top < 1:
        raise ConfigError(f"--top: at least 1 (got {args.top})")
    if args.softmax and len(set(texts)) < 2:
        raise ConfigError("--softmax needs at least two different texts (a softmax over one is 1)")
    since = None if args.since is None else parse_when(args.since, now_s, "--since")
    until = None if args.until is None else parse_when(args.until, now_s, "--until")
    if since is not None and until is not None and since > until:
        raise ConfigError(f"--since ({args.since}) is after --until ({args.until})")
    top = args.top if args.top is not None or args.threshold is not None else DEFAULT_TOP
    jobs = getattr(args, "jobs", None)
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs: at least 1 (got {jobs})")
    return SearchOptions(
        texts,
        since,
        until,
        args.source,
        args.threshold,
        top,
        args.softmax,
        default_jobs() if jobs is None else jobs,
    )


def run_search(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Score every stored window in range against the texts and print the matches."""
    out = out or sys.stdout
    options = options_from_args(args, time.time())
    config = load_config(args.config, require_source=False) if args.config else None
    path = (
        Path(args.history).expanduser()
        if args.history
        else resolve_history_path(config.history.path if config else None)
    )
    store = HistoryStore.open_existing(path)
    try:
        report = _search(store, options, config, args)
    finally:
        store.close()
    out.write(render(report, args.format))
    return EXIT_OK


def _search(
    store: HistoryStore, options: SearchOptions, config: Config | None, args: argparse.Namespace
) -> SearchReport:
    summary = store.summary()
    if summary.windows == 0 or summary.dim is None:
        raise HistoryError(f"history {store.path} holds no windows yet")
    if options.source_id is not None and options.source_id not in summary.windows_of:
        have = ", ".join(sorted(summary.windows_of))
        raise ConfigError(f"--source: no windows of {options.source_id!r} (history has {have})")
    model_cfg = config.model if config is not None else ModelConfig()
    if summary.model_id and summary.model_id != model_cfg.name:
        logger.warning(
            "history was recorded with model %s, the texts are embedded with %s: scores "
            "mean little unless both are the same checkpoint",
            summary.model_id,
            model_cfg.name,
        )
    model = load_text_model(model_cfg)
    if model.embedding_dim != summary.dim:
        raise ConfigError(
            f"model {model_cfg.name!r} embeds text in {model.embedding_dim} dimensions, the "
            f"history holds {summary.dim}: search with the model that recorded it"
        )
    embeddings = model.embed_text(list(options.texts))
    scorer = text_scorer(
        options.texts, embeddings, options.softmax, model.logit_scale if options.softmax else 1.0
    )
    started = time.perf_counter()
    sources = scan_history(
        store.path, scorer, options.since_s, options.until_s, options.source_id, options.jobs
    )
    scored = sum(s.windows for s in sources)
    if scored == 0:
        raise HistoryError(
            f"history {store.path} holds no windows{_range_text(options)} "
            f"(it holds {_when(summary.first_s)} to {_when(summary.last_s)})"
        )
    ranges: list[tuple[str, Range]] = []
    for column, text in enumerate(options.texts):
        found = (
            above(sources, column, options.threshold)
            if options.threshold is not None
            else best(sources, column, options.top or DEFAULT_TOP)
        )
        ranges.extend((text, r) for r in found)
    seconds = time.perf_counter() - started
    clips = _clips(config, args)
    matches = tuple(_match(text, r, clips) for text, r in ranges)
    return SearchReport(options, model_cfg.name, scored, seconds, matches)


def _clips(config: Config | None, args: argparse.Namespace) -> list[ClipRef]:
    """The clips of --clips, else of the config's clips section (when this build has one)."""
    directory: Path | None = Path(args.clips).expanduser() if args.clips else None
    if directory is None:
        section = getattr(config, "clips", None)
        configured = getattr(section, "directory", None)
        directory = Path(configured).expanduser() if configured else None
    if directory is None or not directory.is_dir():
        return []
    return load_clips(directory)


def _match(text: str, found: Range, clips: list[ClipRef]) -> Match:
    return Match(
        text=text,
        source_id=found.source_id,
        start=_utc(found.start_s),
        end=_utc(found.end_s),
        peak_score=found.peak_score,
        peak_time=_utc(found.peak_start_s),
        windows=found.windows,
        clips=covering(clips, found.source_id, found.start_s, found.end_s),
    )


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _when(seconds: float | None) -> str:
    return "-" if seconds is None else _utc(seconds).isoformat(timespec="seconds")


def _range_text(options: SearchOptions) -> str:
    source = "" if options.source_id is None else f" of {options.source_id}"
    since = "the first window" if options.since_s is None else _when(options.since_s)
    until = "now" if options.until_s is None else _when(options.until_s)
    return f"{source} from {since} to {until}"
