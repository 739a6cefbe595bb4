"""The `audio-monitor` command line: run, listen, check-config, devices, classify, eval, search,
bench."""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from monitor import __version__
from monitor.errors import EXIT_FAILURE, EXIT_OK, MonitorError

logger = logging.getLogger(__name__)


def _setup_logging(level: str) -> None:
    # Under systemd the journal stamps each line itself; elsewhere a timestamp helps.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if "JOURNAL_STREAM" not in os.environ:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr, force=True)
    # Third-party chatter (paho, transformers) only when it matters.
    for noisy in ("transformers", "huggingface_hub", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def _cmd_check_config(args: argparse.Namespace) -> int:
    from monitor.config import load_config

    config = load_config(args.config)
    labels = sum(len(s.labels) for s in config.label_sets)
    kinds = [s.type for s in config.source_configs]
    sources = ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds)) or "no"
    print(
        f"{args.config}: OK ({sources} source(s), {len(config.label_sets)} label set(s), "
        f"{labels} labels, {config.window.seconds:g} s windows every "
        f"{config.window.hop_seconds:g} s)"
    )
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from monitor.config import load_config

    config = load_config(args.config)
    _setup_logging(args.log_level or config.log_level)
    from monitor.service.daemon import run_daemon

    return run_daemon(config, Path(args.config))


def _cmd_devices(_args: argparse.Namespace) -> int:
    from monitor.audio.microphone import format_devices_table, list_input_devices

    print(format_devices_table(list_input_devices()))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audio-monitor",
        description="Listen continuously, score audio zero-shot with CLAP, publish over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the monitor")
    run.add_argument("--config", "-c", required=True, help="YAML configuration file")
    run.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="override the config's log_level",
    )
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration file (exit 0 or 78)")
    check.add_argument("config", help="YAML configuration file")
    check.set_defaults(func=_cmd_check_config)

    devices = sub.add_parser("devices", help="list audio input devices and their default rates")
    devices.set_defaults(func=_cmd_devices)

    _add_listen_parser(sub)
    _add_classify_parser(sub)
    _add_eval_parser(sub)
    _add_search_parser(sub)
    _add_bench_parser(sub)
    return parser


def _add_listen_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "listen",
        help="the top labels per source, live in the terminal (try labels; never publishes)",
        description="Score the microphone (or the sources of --config) and show the top labels "
        "of each source, updated in place. MQTT and json_lines are off: nothing is published.",
    )
    parser.add_argument(
        "--config",
        "-c",
        help="YAML config: its sources (the default microphone if it has none), model, windows "
        "and label sets; default: the default microphone and model",
    )
    parser.add_argument(
        "--labels",
        nargs="+",
        metavar="L",
        help="candidate labels, replacing the config's label sets as one set in absolute mode: "
        "each label's score ignores the others, so adding a candidate changes no other score",
    )
    parser.add_argument("--model", help="hub id or local directory; overrides the config's")
    parser.add_argument(
        "--template",
        action="append",
        metavar="T",
        help="prompt template with '{}' for --labels; repeat for an ensemble",
    )
    parser.add_argument(
        "--background",
        nargs="+",
        metavar="B",
        help="background labels for --labels (absolute scores against the closest of them)",
    )
    parser.add_argument(
        "--top", type=int, default=5, metavar="K", help="labels shown per set (default 5)"
    )
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default="WARNING",
        help="log level on stderr (default WARNING: log lines would break up the view)",
    )
    parser.set_defaults(func=_cmd_listen)


def _add_bench_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "bench", help="measure the scoring path against the transformers pipeline"
    )
    parser.add_argument("--model", help="checkpoint; default: the full-size random architecture")
    parser.add_argument("--labels", type=int, default=30, help="labels scored per window")
    parser.add_argument("--windows", type=int, default=20, help="windows timed per path")
    parser.add_argument("--window-seconds", type=float, default=10.0, help="window length")
    parser.add_argument(
        "--hop-seconds",
        type=float,
        help="time between window starts, cut from one stream as the daemon cuts it; "
        "default 1 (the daemon's), or the window length if shorter; with --sources, 1 "
        "whatever the window",
    )
    parser.add_argument("--batch", type=int, default=1, help="windows per forward pass")
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=["auto", "fp32", "bf16", "int8"],
        default=["fp32"],
        help="precisions of the monitor's path to measure; auto: the row shows what "
        "model.precision auto resolves to on this machine (e.g. auto→onnx/int8)",
    )
    parser.add_argument(
        "--backend",
        nargs="+",
        choices=["auto", "torch", "onnx", "openvino"],
        help="backends; default: torch, and for precision auto every backend (as the daemon)",
    )
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = default")
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda", "auto"],
        default="cpu",
        help="where the monitor's path runs the tower (model.device; the pipeline reference "
        "always runs on the CPU); default cpu, so that CPU figures stay CPU figures",
    )
    parser.add_argument(
        "--audio", type=Path, help="audio file or directory to cut windows from (else generated)"
    )
    parser.add_argument(
        "--replay-minutes",
        type=float,
        help="instead: replay this many minutes through the whole daemon and report throughput",
    )
    parser.add_argument(
        "--sources",
        type=int,
        nargs="+",
        metavar="K",
        help="with --replay-minutes: for each K, one daemon with K real-time sources replaying "
        "the audio at once (each run takes the replayed minutes of wall time); reports "
        "windows dropped, latency and CPU per source, and the largest K served without "
        "dropping windows (hop 1 s unless --hop-seconds)",
    )
    parser.add_argument(
        "--soundscape",
        choices=["quiet-home"],
        help="with --replay-minutes: replay a generated soundscape instead of --audio: "
        "quiet-home = steady noise at -50 dBFS with about 1.5 short sounds a minute",
    )
    parser.add_argument(
        "--change-gate",
        nargs="+",
        choices=["off", "on"],
        default=["off"],
        help="with --replay-minutes: run each configuration with window.change_gate off "
        "and/or on (its defaults), to compare CPU per audio hour",
    )
    parser.add_argument("--mqtt", help="host:port of a broker for --replay-minutes (optional)")
    parser.add_argument(
        "--history-days",
        type=float,
        metavar="D",
        help="instead: D days of random 512-d embeddings of one source (1 s hop) through the "
        "history writer into a temporary file, then the search path timed over them (median "
        "of 5); reports MB per day and the insert cost per window; no model is loaded",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(func=_cmd_bench)


def _add_offline_options(parser: argparse.ArgumentParser) -> None:
    """Options classify and eval share: where labels and the model come from, windowing."""
    parser.add_argument(
        "--config", "-c", help="YAML config to take the model and label sets from (source unused)"
    )
    parser.add_argument("--model", help="hub id or local directory; overrides the config's")
    parser.add_argument(
        "--template",
        action="append",
        metavar="T",
        help="prompt template with '{}' for ad-hoc labels; repeat for an ensemble",
    )
    parser.add_argument(
        "--background",
        nargs="+",
        metavar="B",
        help="background labels for ad-hoc labels (in the softmax, never reported as hits)",
    )
    parser.add_argument(
        "--window-seconds",
        type=float,
        default=10.0,
        help="window length for clips longer than it (at most 10, the default)",
    )
    parser.add_argument(
        "--hop-seconds", type=float, help="hop between windows; default = the window (no overlap)"
    )
    parser.add_argument(
        "--aggregate",
        choices=["max", "mean"],
        default="max",
        help="clip-level score from its windows' scores",
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, help="windows per forward pass of the model"
    )


def _add_classify_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "classify", help="classify audio files against label sets (offline, no MQTT)"
    )
    parser.add_argument("paths", nargs="+", type=Path, help="audio files or directories")
    parser.add_argument("--labels", nargs="+", metavar="L", help="ad-hoc labels (one set)")
    parser.add_argument(
        "--label-set",
        action="append",
        metavar="NAME",
        help="only this label set of the config (repeatable)",
    )
    parser.add_argument(
        "--mode", choices=["softmax", "absolute"], help="scoring mode for ad-hoc labels"
    )
    parser.add_argument("--top-k", type=int, default=3, help="labels shown per set and clip")
    parser.add_argument(
        "--format", choices=["table", "json", "csv"], default="table", help="output format"
    )
    _add_offline_options(parser)
    parser.set_defaults(func=_cmd_classify)


def _add_eval_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "eval", help="zero-shot accuracy on a labelled dataset (ESC-50 layout or hub id)"
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help="ESC-50 directory (meta/esc50.csv + audio/) or a Hugging Face dataset id",
    )
    parser.add_argument("--folds", nargs="+", type=int, help="only these folds (default: all)")
    parser.add_argument("--out", type=Path, default=Path("eval-report"), help="report directory")
    parser.add_argument(
        "--target-precision",
        type=float,
        default=0.9,
        help="precision the suggested thresholds aim for",
    )
    parser.add_argument("--limit", type=int, help="at most this many clips (a quick look)")
    _add_offline_options(parser)
    parser.set_defaults(func=_cmd_eval)


def _add_search_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "search",
        help="find sounds in the past by free text (the audio embeddings kept by history:)",
        description="Score every window kept by history: against each TEXT and print the time "
        "ranges where consecutive windows match, per source, with the clips that cover them. "
        "Scores mean what the daemon's do: by default a text's score is the cosine of its "
        "embedding with the window's (squeezed into (0, 0.05) below 0.05), as for a label set "
        "in absolute mode without background labels; --softmax: a softmax over the texts.",
    )
    parser.add_argument("texts", nargs="+", metavar="TEXT", help="what to look for, in words")
    parser.add_argument(
        "--config", "-c", help="YAML config: its model, history.path and clips directory"
    )
    parser.add_argument("--history", help="the history database; overrides the config's")
    parser.add_argument(
        "--since", help="from: a duration back from now (90s, 30m, 24h, 7d, 2w) or ISO-8601"
    )
    parser.add_argument("--until", help="to: the same forms as --since; default now")
    parser.add_argument("--source", help="only this source id")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="every range whose windows score at least T, by time",
    )
    choice.add_argument(
        "--top",
        type=int,
        metavar="N",
        help="the N best ranges per text, by peak score (the default, with N=10, when "
        "neither --threshold nor --top is given)",
    )
    parser.add_argument(
        "--softmax",
        action="store_true",
        help="with several texts: a softmax over them with the checkpoint's logit scale",
    )
    parser.add_argument("--clips", help="clips directory (default: the config's clips.directory)")
    parser.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="processes that scan a large range side by side (default: the CPUs this process "
        "may use, at most 4; 1 on a box whose cores the monitor needs)",
    )
    parser.add_argument(
        "--format", choices=["table", "json", "csv"], default="table", help="output format"
    )
    parser.set_defaults(func=_cmd_search)


def _cmd_listen(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    from monitor.listen.command import run_listen

    return run_listen(args)


def _cmd_classify(args: argparse.Namespace) -> int:
    from monitor.offline.classify import run_classify

    return run_classify(args)


def _cmd_search(args: argparse.Namespace) -> int:
    from monitor.search.command import run_search

    return run_search(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from monitor.bench.command import run_bench

    code: int = run_bench(args)
    return code


def _cmd_eval(args: argparse.Namespace) -> int:
    from monitor.offline.evaluate import run_eval

    return run_eval(args)


def _report_native_crashes() -> None:
    """On a crash in native code (SIGSEGV, SIGABRT...), print every thread's Python stack.

    A native library that aborts, in a worker or at interpreter exit, otherwise leaves one
    line such as "terminate called without an active exception"; the stacks name the thread
    and the library.
    """
    if faulthandler.is_enabled():
        return  # PYTHONFAULTHANDLER=1, or pytest
    with contextlib.suppress(ValueError, OSError):  # a stderr without a file descriptor
        faulthandler.enable(all_threads=True)


def main(argv: Sequence[str] | None = None) -> int:
    _report_native_crashes()
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        _setup_logging("INFO")
    try:
        code: int = args.func(args)
    except MonitorError as err:
        # One line, no traceback: the message names what is wrong and where.
        print(f"audio-monitor: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception:
        logger.exception("unexpected error")
        return EXIT_FAILURE
    return code
