"""Observers combined: bench's and the metrics' both hear every batch, in order."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.frames import Event, Window
from monitor.pipeline.worker import ScoringTiming
from monitor.service.observers import ObserverFanOut, combine


class Recording:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def on_streaming_started(self) -> None:
        self.log.append(f"{self.name} started")

    def on_scored(
        self, windows: Sequence[Window], events: Sequence[Event], timing: ScoringTiming
    ) -> None:
        self.log.append(f"{self.name} scored {timing.embedded}")


def test_none_one_or_several() -> None:
    log: list[str] = []
    a, b = Recording("a", log), Recording("b", log)
    assert combine() is None and combine(None, None) is None
    assert combine(None, a) is a  # one observer is not wrapped
    both = combine(a, None, b)
    assert isinstance(both, ObserverFanOut)
    both.on_streaming_started()
    both.on_scored([], [], ScoringTiming(0.0, 1.0, 5.0, 2))
    assert log == ["a started", "b started", "a scored 2", "b scored 2"]
