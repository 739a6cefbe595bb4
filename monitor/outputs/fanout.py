"""Hands every event and health report to each output; one broken output silences no other."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from monitor.config import LabelSetConfig
from monitor.frames import ControlResult, Event, Scores
from monitor.outputs.sink import DeliveryStats, HealthReport, Sink

logger = logging.getLogger(__name__)

T = TypeVar("T")

MIN_STOP_SECONDS = 0.5  # each output gets at least this to say goodbye, even past the budget
FAILURE_LOG_EVERY = 100  # after the first failure of an output, log every this many


class FanOut:
    """The one dispatcher between the pipeline and its outputs."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = tuple(sinks)
        self._failures = dict.fromkeys(range(len(self.sinks)), 0)
        self._lock = threading.Lock()

    @property
    def failures(self) -> int:
        """Calls that raised in some output since start (each output counted on its own)."""
        return sum(self._failures.values())

    def start(self) -> None:
        """Start every output in order; an output that cannot start fails the start-up."""
        for sink in self.sinks:
            sink.start()

    def publish_events(self, events: Sequence[Event]) -> None:
        for event in events:
            self._each("an event", event, _publish_event)

    def publish_health(self, report: HealthReport) -> None:
        self._each("a health report", report, _publish_health)

    def publish_scores(self, scores: Sequence[Scores]) -> None:
        self._each("scores", scores, _publish_scores)

    def receive_commands(self, handler: Callable[[bytes], None]) -> None:
        for sink in self.sinks:
            sink.receive_commands(handler)

    def update_labels(self, label_sets_of: Mapping[str, Sequence[LabelSetConfig]]) -> None:
        self._each("label changes", label_sets_of, _update_labels)

    def publish_control_result(self, result: ControlResult) -> None:
        self._each("a control result", result, _publish_control_result)

    def stop(self, timeout_seconds: float) -> None:
        """Stop every output within the shared budget, even when one of them fails."""
        deadline = time.monotonic() + timeout_seconds
        for sink in self.sinks:
            budget = max(MIN_STOP_SECONDS, deadline - time.monotonic())
            try:
                sink.stop(budget)
            except Exception:
                logger.exception("output %s failed to stop", sink.name)

    def delivery(self) -> DeliveryStats | None:
        """The outputs with a remote end taken together: connected only if all of them are."""
        stats = [s for s in (sink.delivery() for sink in self.sinks) if s is not None]
        if not stats:
            return None
        return DeliveryStats(
            connected=all(s.connected for s in stats),
            pending=sum(s.pending for s in stats),
            dropped=sum(s.dropped for s in stats),
        )

    def _each(self, what: str, item: T, call: Callable[[Sink, T], None]) -> None:
        for index, sink in enumerate(self.sinks):
            try:
                call(sink, item)
            except Exception:
                with self._lock:  # the worker and the supervisor both publish
                    self._failures[index] += 1
                    failures = self._failures[index]
                if failures == 1:
                    logger.exception("output %s failed to publish %s", sink.name, what)
                elif failures % FAILURE_LOG_EVERY == 0:
                    logger.error("output %s has failed %d times", sink.name, failures)


def _publish_event(sink: Sink, event: Event) -> None:
    sink.publish_event(event)


def _publish_health(sink: Sink, report: HealthReport) -> None:
    sink.publish_health(report)


def _publish_scores(sink: Sink, scores: Sequence[Scores]) -> None:
    sink.publish_scores(scores)


def _update_labels(sink: Sink, label_sets_of: Mapping[str, Sequence[LabelSetConfig]]) -> None:
    sink.update_labels(label_sets_of)


def _publish_control_result(sink: Sink, result: ControlResult) -> None:
    sink.publish_control_result(result)
