"""--since and --until: a duration back from now (24h, 30m, 7d) or an ISO-8601 time."""

from __future__ import annotations

import re
from datetime import datetime

from monitor.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_when(text: str, now_s: float, option: str) -> float:
    """Unix seconds: `now_s` minus a duration, or an ISO-8601 time (local time when it names
    no zone); ConfigError naming `option` otherwise."""
    match = _DURATION.match(text)
    if match:
        return now_s - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{option}: {text!r} is neither a duration back from now (90s, 30m, 24h, 7d, 2w) "
            "nor an ISO-8601 time (2024-05-01T18:00, 2024-05-01T18:00:00+00:00)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # the local zone, as the user reads clocks
    return when.timestamp()
