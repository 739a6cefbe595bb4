"""Where the monitor keeps state when the config names no path: systemd's, else the user's."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def state_path(
    configured: Path | None, *default: str, environ: Mapping[str, str] | None = None
) -> Path:
    """`configured` (with ~ expanded), else `default` under $STATE_DIRECTORY (systemd's
    StateDirectory=), else under ~/.local/state/audio-monitor."""
    env = os.environ if environ is None else environ
    if configured is not None:
        return configured.expanduser()
    # systemd passes one path per StateDirectory= entry, separated by ':'.
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state).joinpath(*default)
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home.joinpath(".local", "state", "audio-monitor", *default)
