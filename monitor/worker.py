"""The scoring worker thread: window -> one audio embedding -> scores per label set -> events."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from monitor.events import EventTracker
from monitor.frames import Detection, Event, Scores, Window
from monitor.scoring import LabelSetScorer
from monitor.windowing import Windower

log = logging.getLogger(__name__)

WAIT_SECONDS = 0.25
CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipped
CLIPPED_FRACTION = 0.01
DC_LEVEL = 0.05  # |mean| above this is a broken input stage, not sound


class AudioEmbedder(Protocol):
    """What the worker needs of the model (monitor.model.ClapRunner provides it)."""

    model_id: str

    def embed_audio(self, windows: Sequence[np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class WorkerStats:
    """Counters of the worker, read by the supervisor."""

    windows_scored: int
    windows_skipped_nonfinite: int  # NaN/Inf samples: never sent to the model
    windows_skipped_silent: int  # digital silence (all zero): nothing to hear, model skipped
    windows_skipped_lagging: int
    windows_clipped: int  # scored, but more than 1 % of samples at full scale
    windows_dc_offset: int  # scored after removing a DC offset above DC_LEVEL
    detections: int
    events: int
    last_inference_ms: float
    last_progress_monotonic: float


def detections_of(scores: Scores, scorer: LabelSetScorer, model_id: str) -> list[Detection]:
    """The labels of one set whose score reached their threshold in this window."""
    w = scores.window
    return [
        Detection(
            id=str(uuid.uuid4()),
            source_id=w.source_id,
            label_set=scores.label_set,
            label=label,
            score=score,
            threshold=threshold,
            scores=scores.scores,
            window_start=w.start_time,
            window_end=w.end_time,
            model_id=model_id,
        )
        for (label, score), threshold in zip(scores.scores.items(), scorer.thresholds, strict=True)
        if score >= threshold
    ]


class ScoringWorker(threading.Thread):
    """Scores windows until stopped, or until a finite source is drained (`drained` is then set)."""

    def __init__(
        self,
        windower: Windower,
        embedder: AudioEmbedder,
        scorers: list[LabelSetScorer],
        tracker: EventTracker,
        sink: Callable[[Event], None],
        source_finished: Callable[[], bool],
    ) -> None:
        super().__init__(name="scoring-worker", daemon=True)
        self.windower = windower
        self.embedder = embedder
        self.scorers = scorers
        self.tracker = tracker
        self.sink = sink
        self.source_finished = source_finished
        self.error: BaseException | None = None
        self.drained = threading.Event()
        self._stop_requested = threading.Event()
        self._scored = 0
        self._nonfinite = 0
        self._silent = 0
        self._clipped = 0
        self._dc = 0
        self._bad_scores = 0
        self._detections = 0
        self._events = 0
        self._last_ms = 0.0
        self._last_progress = time.monotonic()

    def stop(self) -> None:
        """Ask the worker to stop after the window in flight."""
        self._stop_requested.set()
        self.windower.ring.wake()

    def stats(self) -> WorkerStats:
        return WorkerStats(
            windows_scored=self._scored,
            windows_skipped_nonfinite=self._nonfinite,
            windows_skipped_silent=self._silent,
            windows_skipped_lagging=self.windower.skipped_windows,
            windows_clipped=self._clipped,
            windows_dc_offset=self._dc,
            detections=self._detections,
            events=self._events,
            last_inference_ms=self._last_ms,
            last_progress_monotonic=self._last_progress,
        )

    def run(self) -> None:
        try:
            while not self._stop_requested.is_set():
                window = self.windower.next_window(WAIT_SECONDS)
                self._last_progress = time.monotonic()
                if window is not None:
                    self.process(window)
                elif self.source_finished():
                    # The source wrote its last block before flagging the end: look once more.
                    window = self.windower.next_window(0)
                    if window is not None:
                        self.process(window)
                        continue
                    final = self.windower.final_window()
                    if final is not None:
                        self.process(final)
                    self.drained.set()
                    return
        except BaseException as err:
            self.error = err
            log.exception("scoring worker failed")

    def process(self, window: Window) -> list[Event]:
        """Score one window against every label set and hand its events to the sink."""
        samples = window.samples
        if not np.isfinite(samples).all():
            self._nonfinite += 1
            if self._nonfinite == 1 or self._nonfinite % 100 == 0:
                log.warning(
                    "%d window(s) of %s held NaN/Inf samples and were skipped (latest %s)",
                    self._nonfinite,
                    window.source_id,
                    window.end_time,
                )
            return self._quiet(window)
        if not np.any(samples):
            self._silent += 1  # a muted or disconnected input: nothing for the model
            return self._quiet(window)
        if np.count_nonzero(np.abs(samples) >= CLIP_LEVEL) > CLIPPED_FRACTION * len(samples):
            self._clipped += 1  # still scored: a loud alarm clips, and must still be heard
        offset = float(samples.mean())
        if abs(offset) > DC_LEVEL:
            self._dc += 1
            samples = samples - np.float32(offset)
        started = time.monotonic()
        embedding = self.embedder.embed_audio([samples])
        self._last_ms = (time.monotonic() - started) * 1000.0
        if not np.isfinite(embedding).all():
            self._bad_scores += 1
            log.error("the model returned non-finite values for window %s", window.end_time)
            return self._quiet(window)
        events: list[Event] = []
        stream_seconds = window.end_index / self.windower.rate_hz
        for scorer in self.scorers:
            probs = scorer.score(embedding)[0]
            scores = Scores(
                window, scorer.name, dict(zip(scorer.labels, map(float, probs), strict=True))
            )
            found = detections_of(scores, scorer, self.embedder.model_id)
            self._detections += len(found)
            events += self.tracker.update(
                scorer.name, scorer.labels, found, stream_seconds, window.end_time
            )
            if log.isEnabledFor(logging.DEBUG):
                best = max(scores.scores.items(), key=lambda kv: kv[1])
                log.debug("%s %s: top %s %.3f", window.end_time, scorer.name, *best)
        self._scored += 1
        for event in events:
            self.emit(event)
        return events

    def _quiet(self, window: Window) -> list[Event]:
        """A window that was not scored still moves time on: open events can end."""
        stream_seconds = window.end_index / self.windower.rate_hz
        events: list[Event] = []
        for scorer in self.scorers:
            events += self.tracker.update(
                scorer.name, scorer.labels, [], stream_seconds, window.end_time
            )
        for event in events:
            self.emit(event)
        return events

    def emit(self, event: Event) -> None:
        self._events += 1
        d = event.detection
        log.info("event %s: %s/%s score %.3f", event.kind, d.label_set, d.label, d.score)
        self.sink(event)
