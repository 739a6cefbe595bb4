"""How tests start the `audio-monitor` command as a child process."""

from __future__ import annotations

import sys
from pathlib import Path


def monitor_command() -> list[str]:
    """The installed console script when there is one, else `python -m monitor`."""
    script = Path(sys.executable).with_name("audio-monitor")
    return [str(script)] if script.exists() else [sys.executable, "-m", "monitor"]
