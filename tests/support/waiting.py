"""Polling until a condition holds, failing the test with what it waited for."""

from __future__ import annotations

import time
from collections.abc import Callable

WAIT_SECONDS = 20.0  # generous: a loaded 2-core CI box


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout_seconds: float = WAIT_SECONDS,
    poll_seconds: float = 0.02,
) -> None:
    """Return once `condition()` is true; raise AssertionError naming `what` after the timeout."""
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_seconds} s waiting for {what}")
        time.sleep(poll_seconds)
