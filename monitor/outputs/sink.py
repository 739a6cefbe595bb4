"""The small interface every output implements, so the pipeline never sees a protocol or a topic."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from monitor.config import LabelSetConfig
from monitor.frames import ControlResult, Event, Scores


@dataclass(frozen=True)
class SourceHealth:
    """One source's health: its own state and counters."""

    source_id: str
    state: str  # "ok", "degraded" (being reopened) or "failed" (given up on)
    detail: str
    counters: Mapping[str, int]  # name -> value, in the order they are to be shown


@dataclass(frozen=True)
class HealthReport:
    """The monitor's health at one moment, for outputs that publish it."""

    state: str  # "ok" when every source is ok, else "degraded"
    detail: str
    time: datetime  # UTC
    counters: Mapping[str, int]  # the whole monitor's, in the order they are to be shown
    sources: tuple[SourceHealth, ...]  # in config order


@dataclass(frozen=True)
class DeliveryStats:
    """How an output that talks to a remote end is doing."""

    connected: bool
    pending: int  # messages waiting for the remote end's acknowledgement
    dropped: int  # messages given up on


class Sink(ABC):
    """An output: started once, handed every event and health report, stopped once.

    publish_event and publish_health may be called from the scoring worker and from the
    supervising thread; they must not block for long and must not raise because the far
    end is away.
    """

    name: str

    @abstractmethod
    def start(self) -> None:
        """Begin delivering (connect, announce availability); returns at once."""

    @abstractmethod
    def publish_event(self, event: Event) -> None:
        """Deliver one event start or end."""

    @abstractmethod
    def publish_health(self, report: HealthReport) -> None:
        """Deliver a health report (an output without a health channel ignores it)."""

    @abstractmethod
    def stop(self, timeout_seconds: float) -> None:
        """Flush what can be flushed within `timeout_seconds`, announce going away, close."""

    def publish_scores(self, scores: Sequence[Scores]) -> None:
        """One window's scores, one per label set of its source (outputs that show what is
        being heard; the others ignore them). Called from the worker for every window."""
        return None

    def delivery(self) -> DeliveryStats | None:
        """Connection and backlog counters, or None for an output without a remote end."""
        return None

    def receive_commands(self, handler: Callable[[bytes], None]) -> None:
        """Hand every control command this output receives to `handler` (before start();
        outputs without a command channel ignore it). The handler must not block."""
        return None

    def update_labels(self, label_sets_of: Mapping[str, Sequence[LabelSetConfig]]) -> None:
        """The label sets of each source changed live: entities and states follow."""
        return None

    def publish_control_result(self, result: ControlResult) -> None:
        """The answer to a control command or a config reload."""
        return None
