"""How tests start the `audio-monitor` command and Python snippets as child processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

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
