"""Typed errors raised at third-party boundaries, and the exit codes they map to."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
# sysexits.h: EX_TEMPFAIL for a source or model that cannot be used (systemd may retry),
# EX_CONFIG for a bad configuration (retrying cannot help; the unit prevents restarts on it).
EXIT_UNAVAILABLE = 75
EXIT_CONFIG = 78


class MonitorError(Exception):
    """Base of the errors the CLI turns into a one-line message and an exit code."""

    exit_code = EXIT_FAILURE


class ConfigError(MonitorError):
    """The configuration file is missing, unreadable or invalid."""

    exit_code = EXIT_CONFIG


class SourceError(MonitorError):
    """An audio source (device or file) cannot be opened or read."""

    exit_code = EXIT_UNAVAILABLE


class ModelError(MonitorError):
    """The CLAP model cannot be loaded or run."""

    exit_code = EXIT_UNAVAILABLE


class HistoryError(MonitorError):
    """The history database cannot be opened, read or written (or holds nothing to search)."""

    exit_code = EXIT_UNAVAILABLE


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type when the message is empty)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
