"""The fan-out hands each event to every output, even when one of them fails."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime, timezone

import pytest

from monitor.frames import Detection, Event
from monitor.outputs.fanout import FanOut
from monitor.outputs.jsonlines import JsonLinesSink
from monitor.outputs.sink import DeliveryStats, HealthReport, Sink

T = datetime(2026, 3, 1, 12, 0, 5, tzinfo=timezone.utc)


def event(kind: str, label: str) -> Event:
    d = Detection("d-" + label, "mic", "s", label, 0.9, 0.5, {label: 0.9}, T, T, "m")
    return Event(kind, "e-" + label, d, started_at=T, ended_at=T if kind == "end" else None)


class Broken(Sink):
    name = "broken"

    def __init__(self) -> None:
        self.stopped = False

    def start(self) -> None:
        pass

    def publish_event(self, event: Event) -> None:
        raise OSError("disk full")

    def publish_health(self, report: HealthReport) -> None:
        raise OSError("disk full")

    def stop(self, timeout_seconds: float) -> None:
        self.stopped = True
        raise OSError("disk full")


class Remote(Sink):
    name = "remote"

    def __init__(self, stats: DeliveryStats) -> None:
        self.stats = stats
        self.events: list[Event] = []
        self.reports: list[HealthReport] = []
        self.stop_budget: float | None = None

    def start(self) -> None:
        pass

    def publish_event(self, event: Event) -> None:
        self.events.append(event)

    def publish_health(self, report: HealthReport) -> None:
        self.reports.append(report)

    def stop(self, timeout_seconds: float) -> None:
        self.stop_budget = timeout_seconds

    def delivery(self) -> DeliveryStats:
        return self.stats


def test_a_failing_output_does_not_silence_the_others(caplog: pytest.LogCaptureFixture) -> None:
    broken = Broken()
    remote = Remote(DeliveryStats(True, 0, 0))
    stream = io.StringIO()
    fanout = FanOut([broken, remote, JsonLinesSink("dev", stream)])
    events = [event("start", "a"), event("start", "b"), event("end", "a")]
    with caplog.at_level(logging.ERROR, logger="monitor.outputs.fanout"):
        fanout.publish_events(events)
        fanout.publish_health(HealthReport("ok", "", T, {"windows_scored": 3}, ()))
    assert remote.events == events
    assert [r.counters for r in remote.reports] == [{"windows_scored": 3}]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(p["event"], p["label"], p["device"]) for p in lines] == [
        ("start", "a", "dev"),
        ("start", "b", "dev"),
        ("end", "a", "dev"),
    ]
    assert fanout.failures == 4
    # Logged once, not once per event.
    assert len([r for r in caplog.records if "output broken failed" in r.getMessage()]) == 1
    fanout.stop(3.0)
    assert broken.stopped
    assert remote.stop_budget is not None and 0.5 <= remote.stop_budget <= 3.0


def test_delivery_counts_only_outputs_with_a_remote_end() -> None:
    assert FanOut([JsonLinesSink("dev", io.StringIO())]).delivery() is None
    fanout = FanOut([Remote(DeliveryStats(True, 2, 1)), Remote(DeliveryStats(False, 3, 0))])
    assert fanout.delivery() == DeliveryStats(connected=False, pending=5, dropped=1)
    single = FanOut([Remote(DeliveryStats(True, 7, 4))])
    assert single.delivery() == DeliveryStats(connected=True, pending=7, dropped=4)
