"""Daemons for tests: in a thread of the test process, or as `audio-monitor run` children."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor.service.daemon import Daemon
from tests.support.processes import monitor_command


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


@pytest.fixture
def run_monitor() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Starts `audio-monitor run --config FILE` children (stdout and stderr piped, offline);
    those still running at the test's end are killed."""
    procs: list[subprocess.Popen[str]] = []

    def start(config: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        proc = subprocess.Popen(
            [*monitor_command(), "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
