"""How tests start the `audio-monitor` command and Python snippets, and read their output."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]


def monitor_command() -> list[str]:
    """The installed console script when there is one, else `python -m monitor`."""
    script = Path(sys.executable).with_name("audio-monitor")
    return [str(script)] if script.exists() else [sys.executable, "-m", "monitor"]


def run_python(
    script: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout_seconds: float = 120.0,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run `python -c script args...` in the repository root, this checkpoint of the code first
    on its path; `env` (default: this process's) replaces the environment."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO_ROOT,
        env={**(os.environ if env is None else env), "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout_seconds,
        check=check,
    )


class PipeLines:
    """Every line a child writes to one pipe, read by a thread so the child never blocks."""

    def __init__(self, pipe: IO[str]) -> None:
        self.lines: list[str] = []
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self._thread.start()

    def _drain(self, pipe: IO[str]) -> None:
        for line in pipe:
            with self._condition:
                self.lines.append(line.rstrip("\n"))
                self._condition.notify_all()

    def wait_for(
        self, predicate: Callable[[str], bool], what: str, timeout_seconds: float = 60.0
    ) -> str:
        """The first line (from the start) for which `predicate` holds; AssertionError if none
        comes within the timeout."""
        with self._condition:
            found = self._condition.wait_for(
                lambda: any(predicate(line) for line in self.lines), timeout_seconds
            )
            if found:
                return next(line for line in self.lines if predicate(line))
            tail = "\n".join(self.lines[-15:])
        raise AssertionError(f"no line with {what} after {timeout_seconds} s; last lines:\n{tail}")

    def count(self, predicate: Callable[[str], bool]) -> int:
        with self._condition:
            return sum(1 for line in self.lines if predicate(line))
