"""A Daemon run in a background thread of the test process, and stopped as a signal would."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from monitor.service.daemon import Daemon


class Running:
    """A Daemon run in a background thread of the test process."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.code = self.daemon.run()
        except BaseException as err:
            self.error = err

    def stop(self, timeout_seconds: float = 10.0) -> float:
        """Ask the daemon to stop; the seconds it took."""
        started = time.monotonic()
        self.daemon.request_stop()
        self.thread.join(timeout_seconds)
        assert not self.thread.is_alive(), "daemon did not stop"
        return time.monotonic() - started


@pytest.fixture
def daemons() -> Iterator[list[Running]]:
    """Runs a test appends here are stopped at its end, whatever happened."""
    running: list[Running] = []
    yield running
    for run in running:
        if run.thread.is_alive():
            run.stop()
