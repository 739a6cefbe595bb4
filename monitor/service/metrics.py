"""What the metrics count as the pipeline runs, and one reading of everything a scrape shows."""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from monitor import __version__
from monitor.config import Config
from monitor.frames import Event, Window
from monitor.outputs.sink import HealthReport, Sink
from monitor.pipeline.worker import ScoringTiming
from monitor.service.health import Snapshot
from monitor.service.supervision import Supervisor

# Seconds per window: the tiny test model takes milliseconds, CLAP on a small CPU seconds.
INFERENCE_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class EventKey:
    """Which events one counter counts: every part comes from the config, so keys stay few."""

    source_id: str
    label_set: str
    label: str
    kind: str  # "start" or "end"


@dataclass(frozen=True)
class HistogramReading:
    """A histogram's state: counts per bucket (not cumulative; the last one is above every
    bound), the sum of the observed values and their number."""

    upper_bounds: tuple[float, ...]
    counts: tuple[int, ...]  # len(upper_bounds) + 1
    total: float
    count: int


@dataclass(frozen=True)
class BuildInfo:
    """What is running: the package version and the model as it runs (auto resolved)."""

    version: str
    model: str
    backend: str
    precision: str

    @classmethod
    def of(cls, config: Config, runs_as: tuple[str, str] | None = None) -> BuildInfo:
        m = config.model
        backend, precision = runs_as or (m.backend, m.precision)
        return cls(__version__, m.name, backend, precision)


@dataclass(frozen=True)
class MetricsReading:
    """Everything one scrape shows, read without holding up the scoring worker."""

    snapshot: Snapshot  # the same counters the health topics publish
    # source -> the (label set, label) pairs scored now: shown at 0 before their first count.
    labels: Mapping[str, tuple[tuple[str, str], ...]]
    detections: Mapping[str, Mapping[tuple[str, str], int]]  # source -> (set, label) -> n
    events: Mapping[EventKey, int]
    inference_seconds: HistogramReading
    build: BuildInfo


class MetricsRecorder(Sink):
    """Counts events per label (as an output: it hears every event, even those ended at
    shutdown) and the model's time per window (as an observer of every scored batch).

    Both are called on the worker thread: each is a few additions under a lock that a scrape
    holds only to copy them.
    """

    name = "metrics"

    def __init__(self, upper_bounds: Sequence[float] = INFERENCE_BUCKETS_SECONDS) -> None:
        self._bounds = tuple(upper_bounds)
        self._lock = threading.Lock()
        self._buckets = [0] * (len(self._bounds) + 1)
        self._total = 0.0
        self._count = 0
        self._events: dict[EventKey, int] = {}

    # Observer side.
    def on_streaming_started(self) -> None:
        return None

    def on_scored(
        self, windows: Sequence[Window], events: Sequence[Event], timing: ScoringTiming
    ) -> None:
        if timing.embedded <= 0:
            return
        seconds = timing.inference_ms / 1000.0
        if not math.isfinite(seconds):
            return
        # Every window of a batch took the batch's time per window.
        index = bisect.bisect_left(self._bounds, seconds)  # the first bucket with le >= value
        with self._lock:
            self._buckets[index] += timing.embedded
            self._total += seconds * timing.embedded
            self._count += timing.embedded

    # Output side.
    def start(self) -> None:
        return None

    def publish_event(self, event: Event) -> None:
        d = event.detection
        key = EventKey(d.source_id, d.label_set, d.label, event.kind)
        with self._lock:
            self._events[key] = self._events.get(key, 0) + 1

    def publish_health(self, report: HealthReport) -> None:
        return None  # the health counters are read from the supervisor at each scrape

    def stop(self, timeout_seconds: float) -> None:
        return None

    def events(self) -> dict[EventKey, int]:
        with self._lock:
            return dict(self._events)

    def inference_seconds(self) -> HistogramReading:
        with self._lock:
            return HistogramReading(self._bounds, tuple(self._buckets), self._total, self._count)


def read_metrics(
    supervisor: Supervisor, recorder: MetricsRecorder, build: BuildInfo
) -> MetricsReading:
    """One reading for a scrape. The health snapshot is read first: counters read after it
    (detections, events) are never behind it, as in the health report."""
    snapshot = supervisor.snapshot()
    worker = supervisor.pipeline.worker
    return MetricsReading(
        snapshot=snapshot,
        labels={
            s.source_id: tuple(
                (scorer.name, label)
                for scorer in worker.scorers(s.source_id)
                for label in scorer.labels
            )
            for s in snapshot.sources
        },
        detections={s.source_id: worker.detections_by_label(s.source_id) for s in snapshot.sources},
        events=recorder.events(),
        inference_seconds=recorder.inference_seconds(),
        build=build,
    )
