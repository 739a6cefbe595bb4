"""Events as JSON lines on stdout, one object per line, in the shape of the MQTT detection."""

from __future__ import annotations

import json
import sys
import threading
from typing import TextIO

from monitor.frames import Event
from monitor.outputs.mqtt.payloads import event_payload
from monitor.outputs.sink import HealthReport, Sink


class JsonLinesSink(Sink):
    """Writes each event as one compact JSON line and flushes it at once."""

    name = "json-lines"

    def __init__(self, device_id: str, stream: TextIO | None = None) -> None:
        self.device_id = device_id
        self.stream = stream
        self._lock = threading.Lock()  # events come from the worker and from shutdown

    def start(self) -> None:
        """Nothing to connect: stdout is open."""

    def publish_event(self, event: Event) -> None:
        line = json.dumps(event_payload(event, self.device_id), separators=(",", ":"))
        stream = self.stream if self.stream is not None else sys.stdout
        with self._lock:
            stream.write(line + "\n")
            stream.flush()

    def publish_health(self, report: HealthReport) -> None:
        """Health goes to the log and the service manager, not into the event stream."""

    def stop(self, timeout_seconds: float) -> None:
        """Every line was flushed as it was written."""
