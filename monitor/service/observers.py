"""Several pipeline observers as one: the daemon takes one, and metrics must not replace bench's."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.frames import Event, Window
from monitor.pipeline.worker import ScoringTiming
from monitor.service.pipeline import PipelineObserver


class ObserverFanOut:
    """Tells each observer, in order, about streaming starting and every batch scored."""

    def __init__(self, observers: Sequence[PipelineObserver]) -> None:
        self.observers = tuple(observers)

    def on_streaming_started(self) -> None:
        for observer in self.observers:
            observer.on_streaming_started()

    def on_scored(
        self, windows: Sequence[Window], events: Sequence[Event], timing: ScoringTiming
    ) -> None:
        for observer in self.observers:
            observer.on_scored(windows, events, timing)


def combine(*observers: PipelineObserver | None) -> PipelineObserver | None:
    """The given observers as one; the only one unwrapped; None when none was given."""
    present = [observer for observer in observers if observer is not None]
    if len(present) <= 1:
        return present[0] if present else None
    return ObserverFanOut(present)
