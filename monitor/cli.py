"""The `audio-monitor` command line: run, check-config, devices."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from monitor import __version__
from monitor.errors import EXIT_FAILURE, EXIT_OK, MonitorError

log = logging.getLogger("monitor")


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
    print(
        f"{args.config}: OK ({config.source.type} source, {len(config.label_sets)} label set(s), "
        f"{labels} labels, {config.window.seconds:g} s windows every "
        f"{config.window.hop_seconds:g} s)"
    )
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from monitor.config import load_config

    config = load_config(args.config)
    _setup_logging(args.log_level or config.log_level)
    from monitor.daemon import run_daemon

    return run_daemon(config)


def _cmd_devices(_args: argparse.Namespace) -> int:
    from monitor.capture import format_devices_table, list_input_devices

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
        log.exception("unexpected error")
        return EXIT_FAILURE
    return code
