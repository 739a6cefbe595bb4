"""The scoring worker thread: window -> one audio embedding -> scores per label set -> events."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np

from monitor.audio.windowing import Windower
from monitor.frames import Detection, Event, Scores, Window
from monitor.pipeline.events import EventTracker
from monitor.pipeline.scoring import LabelSetScorer

logger = logging.getLogger(__name__)

WAIT_SECONDS = 0.25
CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipped
CLIPPED_FRACTION = 0.01
DC_LEVEL = 0.05  # |mean| above this is a broken input stage, not sound


class AudioEmbedder(Protocol):
    """What the worker needs of the model (monitor.model.runner.ClapRunner provides it)."""

    model_id: str

    def embed_audio(
        self, windows: Sequence[np.ndarray], positions: Sequence[int | None] | None = None
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class ScoringTiming:
    """When one batch of windows was scored (time.monotonic() seconds)."""

    started_monotonic: float  # scoring of the batch began
    finished_monotonic: float  # its scores and events were ready, before any output saw them
    inference_ms: float  # the model's time per window of the batch, 0 if none reached it


class ScoringObserver(Protocol):
    """Told about each batch the worker has scored and handed on (benchmarks, tests)."""

    def on_scored(
        self, windows: Sequence[Window], events: Sequence[Event], timing: ScoringTiming
    ) -> None: ...


@dataclass(frozen=True)
class WorkerStats:
    """Counters of the worker, read by the supervisor."""

    windows_scored: int
    windows_skipped_nonfinite: int  # NaN/Inf samples: never sent to the model
    windows_skipped_silent: int  # digital silence (all zero): nothing to hear, model skipped
    windows_skipped_lagging: int
    windows_clipped: int  # scored, but more than 1 % of samples at full scale
    windows_dc_offset: int  # scored after removing a DC offset above DC_LEVEL
    windows_skipped_quiet: int  # below the energy gate (window.min_dbfs): model skipped
    detections: int
    events: int
    last_inference_ms: float
    last_progress_monotonic: float


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale square wave is 0 dBFS)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


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
        on_events: Callable[[Sequence[Event]], None],
        source_finished: Callable[[], bool],
        *,
        max_batch: int = 1,
        min_dbfs: float | None = None,
        observer: ScoringObserver | None = None,
    ) -> None:
        super().__init__(name="scoring-worker", daemon=True)
        self.windower = windower
        self.embedder = embedder
        self.scorers = scorers
        self.tracker = tracker
        self.on_events = on_events
        self.observer = observer
        self.source_finished = source_finished
        self.max_batch = max_batch
        self.min_dbfs = min_dbfs
        self.error: BaseException | None = None
        self.drained = threading.Event()
        self._stop_requested = threading.Event()
        self._scored = 0
        self._nonfinite = 0
        self._silent = 0
        self._clipped = 0
        self._dc = 0
        self._quiet_gated = 0
        self._bad_scores = 0
        self._detections = 0
        self._events = 0
        self._last_ms = 0.0
        self._batch_ms = 0.0  # of the latest batch; 0 when none of its windows met the model
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
            windows_skipped_quiet=self._quiet_gated,
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
                    self._step(self._with_waiting(window))
                elif self.source_finished():
                    # The source wrote its last block before flagging the end: look once more.
                    window = self.windower.next_window(0)
                    if window is not None:
                        self._step(self._with_waiting(window))
                        continue
                    final = self.windower.final_window()
                    if final is not None:
                        self._step([final])
                    self.drained.set()
                    return
        except BaseException as err:
            self.error = err
            logger.exception("scoring worker failed")

    def _step(self, windows: list[Window]) -> None:
        """Score a batch, hand its events on, then show the observer what was done."""
        started = time.monotonic()
        events = self.process_batch(windows)
        timing = ScoringTiming(started, time.monotonic(), self._batch_ms)
        self.deliver(events)
        if self.observer is not None:
            self.observer.on_scored(windows, events, timing)

    def deliver(self, events: Sequence[Event]) -> None:
        """The one way out for events: counted, logged and handed to `on_events`."""
        for event in events:
            self._events += 1
            d = event.detection
            logger.info("event %s: %s/%s score %.3f", event.kind, d.label_set, d.label, d.score)
        if events:
            self.on_events(events)

    def close_all(self, now: datetime) -> list[Event]:
        """End every open event (at shutdown, once the thread has stopped) and hand them on."""
        events = self.tracker.close_all(now)
        self.deliver(events)
        return events

    def _with_waiting(self, window: Window) -> list[Window]:
        """`window` plus those already waiting (catching up), for one forward pass."""
        batch = [window]
        while len(batch) < self.max_batch and not self._stop_requested.is_set():
            more = self.windower.next_window(0)
            if more is None:
                break
            batch.append(more)
        return batch

    def process(self, window: Window) -> list[Event]:
        """Score one window against every label set; returns the events it caused."""
        return self.process_batch([window])

    def process_batch(self, windows: list[Window]) -> list[Event]:
        """Score windows (one forward pass for those that need the model), in stream order;
        returns the events they caused, in that order, without handing them on."""
        prepared = [self._prepare(window) for window in windows]
        to_embed = [samples for samples in prepared if samples is not None]
        # A window's stream position lets the model reuse frames of earlier windows, which is
        # only right for the stream's own samples: none where _prepare changed them (DC).
        positions = [
            window.model_start_index if samples is window.samples else None
            for window, samples in zip(windows, prepared, strict=True)
            if samples is not None
        ]
        embeddings = np.zeros((0, 0), np.float32)
        self._batch_ms = 0.0
        if to_embed:
            started = time.monotonic()
            embeddings = self.embedder.embed_audio(to_embed, positions)
            self._last_ms = self._batch_ms = (time.monotonic() - started) * 1000.0 / len(to_embed)
        events: list[Event] = []
        row = 0
        for window, samples in zip(windows, prepared, strict=True):
            if samples is None:
                events += self._quiet(window)
                continue
            embedding = embeddings[row : row + 1]
            row += 1
            if not np.isfinite(embedding).all():
                self._bad_scores += 1
                logger.error("the model returned non-finite values for window %s", window.end_time)
                events += self._quiet(window)
                continue
            events += self._score(window, embedding)
        return events

    def _prepare(self, window: Window) -> np.ndarray | None:
        """The samples to embed, or None when the window must not reach the model."""
        samples = window.samples
        if not np.isfinite(samples).all():
            self._nonfinite += 1
            if self._nonfinite == 1 or self._nonfinite % 100 == 0:
                logger.warning(
                    "%d window(s) of %s held NaN/Inf samples and were skipped (latest %s)",
                    self._nonfinite,
                    window.source_id,
                    window.end_time,
                )
            return None
        if not np.any(samples):
            self._silent += 1  # a muted or disconnected input: nothing for the model
            return None
        if np.count_nonzero(np.abs(samples) >= CLIP_LEVEL) > CLIPPED_FRACTION * len(samples):
            self._clipped += 1  # still scored: a loud alarm clips, and must still be heard
        offset = float(samples.mean())
        if abs(offset) > DC_LEVEL:
            self._dc += 1
            samples = samples - np.float32(offset)
        if self.min_dbfs is not None and rms_dbfs(samples) < self.min_dbfs:
            self._quiet_gated += 1  # below the energy gate: not worth the model's time
            return None
        return samples

    def _score(self, window: Window, embedding: np.ndarray) -> list[Event]:
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
            if logger.isEnabledFor(logging.DEBUG):
                best = max(scores.scores.items(), key=lambda kv: kv[1])
                logger.debug("%s %s: top %s %.3f", window.end_time, scorer.name, *best)
        self._scored += 1
        return events

    def _quiet(self, window: Window) -> list[Event]:
        """A window that was not scored still moves time on: open events can end."""
        stream_seconds = window.end_index / self.windower.rate_hz
        events: list[Event] = []
        for scorer in self.scorers:
            events += self.tracker.update(
                scorer.name, scorer.labels, [], stream_seconds, window.end_time
            )
        return events
