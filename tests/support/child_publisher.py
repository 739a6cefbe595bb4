"""A publisher in a child process that a test can kill or freeze for real, driven over stdin."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.broker import Broker
from tests.support.mqtt import DATA, publisher_settings
from tests.support.processes import REPO_ROOT
from tests.support.waiting import WAIT_SECONDS

# A monitor in its own process, driven over stdin: "pub <prefix> <count>" publishes detections
# {"id": "<prefix><i>"}; "stats" prints PublisherStats as JSON; SIGTERM runs stop().
_CHILD_SCRIPT = """
import dataclasses, json, signal, sys, time
from monitor.config import MqttConfig
from monitor.outputs.mqtt.publisher import MqttPublisher

settings, status_topic, data_topic = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
publisher = MqttPublisher(MqttConfig.model_validate(settings), status_topic)

def say(text):
    sys.stdout.write(text + "\\n")
    sys.stdout.flush()

def on_term(_signum, _frame):
    began = time.monotonic()
    publisher.stop(timeout_seconds=2.0)
    say(f"stopped {time.monotonic() - began:.3f}")
    raise SystemExit(0)

signal.signal(signal.SIGTERM, on_term)
publisher.start()
say("started")
for line in sys.stdin:
    words = line.split()
    if words[0] == "pub":
        for i in range(int(words[2])):
            payload = json.dumps({"id": f"{words[1]}{i}"})
            publisher.publish(data_topic, payload, qos=1, retain=False)
        say("published")
    elif words[0] == "stats":
        stats = dataclasses.asdict(publisher.stats())
        say(json.dumps({**stats, "connected": publisher.connected}))
while True:
    time.sleep(60)
"""
CHILD_STATUS = "am-test/child/status"


class ChildPublisher:
    """A publisher in a subprocess (see _CHILD_SCRIPT), so a test can kill it for real."""

    def __init__(self, settings: dict[str, Any], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        with stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_SCRIPT, json.dumps(settings), CHILD_STATUS, DATA],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, name="child-stdout", daemon=True).start()
        self.expect("started")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))

    def expect(self, prefix: str, timeout_seconds: float = WAIT_SECONDS) -> str:
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(
                    f"child printed no {prefix!r} in {timeout_seconds} s; stderr:\n"
                    + self.stderr_path.read_text(errors="replace")[-3000:]
                ) from None
            if line.startswith(prefix):
                return line

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def publish(self, prefix: str, count: int) -> None:
        """Publish detections <prefix>0..; returns once every publish() call has returned."""
        self.send(f"pub {prefix} {count}")
        self.expect("published")

    def stats(self) -> dict[str, Any]:
        self.send("stats")
        stats: dict[str, Any] = json.loads(self.expect("{"))
        return stats

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def child_settings(broker: Broker, outbox: Path, **overrides: Any) -> dict[str, Any]:
    """MqttConfig settings of a child publisher whose outbox is `outbox`."""
    return publisher_settings(
        broker, device_id="child", outbox={"directory": str(outbox)}, **overrides
    )
