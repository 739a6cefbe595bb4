"""The scoring worker thread: window -> one audio embedding -> scores per label set -> events."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import numpy as np

from monitor.audio.windowing import Windower
from monitor.frames import Detection, Event, Position, Scores, Window, WindowEmbedding
from monitor.pipeline.events import EventTracker
from monitor.pipeline.gate import ChangeGate
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
        self, windows: Sequence[np.ndarray], positions: Sequence[Position] | None = None
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class Feed:
    """One source as the worker sees it: its windows and the label sets they are scored by
    at start (ScoringWorker.set_scorers changes them)."""

    windower: Windower
    scorers: tuple[LabelSetScorer, ...]
    finished: Callable[[], bool]  # a finite source has delivered all of its audio

    @property
    def source_id(self) -> str:
        return self.windower.source_id


@dataclass(frozen=True)
class ScoringTiming:
    """When one batch of windows was scored (time.monotonic() seconds)."""

    started_monotonic: float  # scoring of the batch began
    finished_monotonic: float  # its scores and events were ready, before any output saw them
    inference_ms: float  # the model's time per window of the batch, 0 if none reached it
    embedded: int = 0  # windows of the batch that reached the model


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
    windows_gated: int  # unchanged since the last scored window: its scores carried forward
    detections: int
    events: int
    last_inference_ms: float
    last_progress_monotonic: float
    level_dbfs: float  # the latest window's RMS level (-inf: silence or none yet)


@dataclass
class _Counters:
    """One source's counters, written only by the worker thread."""

    scored: int = 0
    nonfinite: int = 0
    silent: int = 0
    clipped: int = 0
    dc: int = 0
    quiet_gated: int = 0
    gated: int = 0  # the change gate carried the last embedding: no inference
    bad_scores: int = 0
    detections: int = 0
    events: int = 0
    # (label set, label) -> detections: names from the config, so the keys stay few.
    detections_by_label: dict[tuple[str, str], int] = field(default_factory=dict)
    last_ms: float = 0.0
    level_dbfs: float = -math.inf


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
            window_start_index=w.start_index,
            window_end_index=w.end_index,
        )
        for (label, score), threshold in zip(scores.scores.items(), scorer.thresholds, strict=True)
        if score >= threshold
    ]


class ScoringWorker(threading.Thread):
    """Scores the windows of every feed until stopped, or until every feed is drained (finite
    sources only; `drained` is then set).

    One forward pass takes up to `max_batch` windows. Scheduling is fair: each batch holds at
    most one window per source (a live source's newest, a lossless source's next), starting
    with a different source each time, so a file replayed as fast as possible never delays a
    live source by more than one window's inference. Only when no live source is running do
    lossless sources fill the batch with several windows each (throughput for replays).
    """

    def __init__(
        self,
        feeds: Sequence[Feed],
        embedder: AudioEmbedder,
        tracker: EventTracker,
        on_events: Callable[[Sequence[Event]], None],
        *,
        max_batch: int = 1,
        min_dbfs: float | None = None,
        observer: ScoringObserver | None = None,
        on_scores: Callable[[Sequence[Scores]], None] | None = None,
        on_embeddings: Callable[[Sequence[WindowEmbedding]], None] | None = None,
        gate: ChangeGate | None = None,
    ) -> None:
        """`on_scores`, when given, hears every scored window's scores (one per label set of
        its source); `on_embeddings` every batch's audio embeddings (the windows that reached
        the model or carried the last one through the change `gate`). Both are called on this
        thread: they must be quick."""
        super().__init__(name="scoring-worker", daemon=True)
        if not feeds:
            raise ValueError("the worker needs at least one feed")
        self.feeds = tuple(feeds)
        self._feed_of = {feed.source_id: feed for feed in self.feeds}
        if len(self._feed_of) != len(self.feeds):
            raise ValueError("two feeds share a source id")
        self.embedder = embedder
        self.tracker = tracker
        self.on_events = on_events
        self.on_scores = on_scores
        self.on_embeddings = on_embeddings
        self.gate = gate
        self._last_embedding: dict[str, np.ndarray] = {}  # per source, (1, dim)
        self.observer = observer
        self.max_batch = max_batch
        self.min_dbfs = min_dbfs
        self.error: BaseException | None = None
        self.drained = threading.Event()
        self._stop_requested = threading.Event()
        self._wakeup = threading.Event()
        for feed in self.feeds:
            feed.windower.ring.notify_on_write(self._wakeup)
        self._done = dict.fromkeys(self._feed_of, False)
        self._counters = {source_id: _Counters() for source_id in self._feed_of}
        self._scorers: Mapping[str, tuple[LabelSetScorer, ...]] = {
            feed.source_id: feed.scorers for feed in self.feeds
        }
        # The mapping the latest batch was scored with: a new one ends unscored labels' events.
        self._scoring_with: Mapping[str, tuple[LabelSetScorer, ...]] = self._scorers
        self._first_feed = 0  # rotates, so no source is always first in a full batch
        self._last_ms = 0.0
        self._batch_ms = 0.0  # of the latest batch; 0 when none of its windows met the model
        self._batch_embedded = 0  # windows of the latest batch that met the model
        self._last_progress = time.monotonic()

    def stop(self) -> None:
        """Ask the worker to stop after the batch in flight."""
        self._stop_requested.set()
        self._wakeup.set()

    def set_scorers(self, scorers_of: Mapping[str, tuple[LabelSetScorer, ...]]) -> None:
        """Score each source's windows against these sets from the next batch on.

        Called from another thread: the mapping is swapped whole, and each batch reads it
        once, so a window is scored entirely by the old sets or entirely by the new ones.
        Events of labels no longer scored end before the first batch scored with it.
        """
        missing = set(self._feed_of) - set(scorers_of)
        if missing:
            raise ValueError(f"no scorers for source(s) {', '.join(sorted(missing))}")
        self._scorers = dict(scorers_of)
        self._wakeup.set()

    def scorers(self, source_id: str) -> tuple[LabelSetScorer, ...]:
        """The sets `source_id` is scored against now."""
        return self._scorers[source_id]

    def stats(self, source_id: str | None = None) -> WorkerStats:
        """The counters of one source, or of all of them together."""
        ids = list(self._counters) if source_id is None else [source_id]
        counters = [self._counters[i] for i in ids]
        return WorkerStats(
            windows_scored=sum(c.scored for c in counters),
            windows_skipped_nonfinite=sum(c.nonfinite for c in counters),
            windows_skipped_silent=sum(c.silent for c in counters),
            windows_skipped_lagging=sum(self._feed_of[i].windower.skipped_windows for i in ids),
            windows_clipped=sum(c.clipped for c in counters),
            windows_dc_offset=sum(c.dc for c in counters),
            windows_skipped_quiet=sum(c.quiet_gated for c in counters),
            windows_gated=sum(c.gated for c in counters),
            detections=sum(c.detections for c in counters),
            events=sum(c.events for c in counters),
            last_inference_ms=(
                self._last_ms if source_id is None else self._counters[source_id].last_ms
            ),
            last_progress_monotonic=self._last_progress,
            level_dbfs=(
                max((c.level_dbfs for c in counters), default=-math.inf)
                if source_id is None
                else self._counters[source_id].level_dbfs
            ),
        )

    def detections_by_label(self, source_id: str) -> dict[tuple[str, str], int]:
        """Detections of one source so far, per (label set, label) that had any."""
        # dict() of a dict is one C call under the GIL: a consistent copy while the worker
        # adds keys, without a lock on the worker's side.
        return dict(self._counters[source_id].detections_by_label)

    def run(self) -> None:
        try:
            while not self._stop_requested.is_set():
                # Cleared before looking: a write after this point wakes the wait below.
                self._wakeup.clear()
                batch = self._collect()
                if not batch:
                    batch = self._finish_drained_feeds()
                self._last_progress = time.monotonic()
                if batch:
                    self._step(batch)
                elif all(self._done.values()):
                    self.drained.set()
                    return
                else:
                    self._wakeup.wait(WAIT_SECONDS)
        except BaseException as err:
            self.error = err
            logger.exception("scoring worker failed")

    def _collect(self) -> list[Window]:
        """The next batch: round by round, one window from each source that has one."""
        feeds = self.feeds[self._first_feed :] + self.feeds[: self._first_feed]
        self._first_feed = (self._first_feed + 1) % len(self.feeds)
        live_running = any(
            not feed.windower.catch_up and not self._done[feed.source_id] for feed in feeds
        )
        batch: list[Window] = []
        while len(batch) < self.max_batch and not self._stop_requested.is_set():
            found = 0
            for feed in feeds:
                if len(batch) >= self.max_batch:
                    break
                if self._done[feed.source_id]:
                    continue
                window = feed.windower.next_window(0)
                if window is not None:
                    batch.append(window)
                    found += 1
            if not found or live_running:
                break
        return batch

    def _finish_drained_feeds(self) -> list[Window]:
        """The last windows of finite sources that have ended (each feed's once)."""
        batch: list[Window] = []
        for feed in self.feeds:
            if self._done[feed.source_id] or not feed.finished():
                continue
            # The source wrote its last block before flagging the end: look once more.
            window = feed.windower.next_window(0)
            if window is not None:
                batch.append(window)
                continue
            self._done[feed.source_id] = True
            final = feed.windower.final_window()
            if final is not None:
                batch.append(final)
            logger.info("source %s finished; all of its audio scored", feed.source_id)
        return batch

    def _step(self, windows: list[Window]) -> None:
        """Score a batch, hand its events on, then show the observer what was done."""
        started = time.monotonic()
        events = self.process_batch(windows)
        timing = ScoringTiming(started, time.monotonic(), self._batch_ms, self._batch_embedded)
        self.deliver(events)
        if self.observer is not None:
            self.observer.on_scored(windows, events, timing)

    def deliver(self, events: Sequence[Event]) -> None:
        """The one way out for events: counted, logged and handed to `on_events`."""
        for event in events:
            d = event.detection
            self._counters[d.source_id].events += 1
            logger.info(
                "event %s: %s %s/%s score %.3f",
                event.kind,
                d.source_id,
                d.label_set,
                d.label,
                d.score,
            )
        if events:
            self.on_events(events)

    def close_all(self, now: datetime) -> list[Event]:
        """End every open event (at shutdown, once the thread has stopped) and hand them on."""
        events = self.tracker.close_all(now)
        self.deliver(events)
        return events

    def process(self, window: Window) -> list[Event]:
        """Score one window against every label set; returns the events it caused."""
        return self.process_batch([window])

    def process_batch(self, windows: list[Window]) -> list[Event]:
        """Score windows (one forward pass for those that need the model), in stream order;
        returns the events they caused, in that order, without handing them on."""
        scorers_of = self._scorers  # read once: the whole batch is scored by one mapping
        events: list[Event] = []
        if scorers_of is not self._scoring_with and windows:
            events += self._end_unscored(scorers_of, windows[0].end_time)
            self._scoring_with = scorers_of
        # A source whose every set is disabled costs no inference.
        prepared: list[np.ndarray | None] = []
        levels: list[float] = []  # each window's own: a batch can hold several of one source
        for window in windows:
            prepared.append(self._prepare(window) if scorers_of[window.source_id] else None)
            levels.append(self._counters[window.source_id].level_dbfs)
        # Windows the change gate lets through without the model: the source's last embedding.
        carried = {
            i: self._last_embedding[window.source_id]
            for i, (window, samples) in enumerate(zip(windows, prepared, strict=True))
            if samples is not None
            and self.gate is not None
            and not self.gate.needs_model(window, samples)  # asked first: it keeps its state
            and window.source_id in self._last_embedding
        }
        prepared = [None if i in carried else samples for i, samples in enumerate(prepared)]
        to_embed = [samples for samples in prepared if samples is not None]
        # A window's stream position lets the model reuse frames of earlier windows, which is
        # only right for the stream's own samples: none where _prepare changed them (DC).
        positions = [
            window.position if samples is window.samples else None
            for window, samples in zip(windows, prepared, strict=True)
            if samples is not None
        ]
        embeddings = np.zeros((0, 0), np.float32)
        self._batch_ms = 0.0
        self._batch_embedded = len(to_embed)
        if to_embed:
            started = time.monotonic()
            embeddings = self.embedder.embed_audio(to_embed, positions)
            self._last_ms = self._batch_ms = (time.monotonic() - started) * 1000.0 / len(to_embed)
            for window, samples in zip(windows, prepared, strict=True):
                if samples is not None:
                    self._counters[window.source_id].last_ms = self._batch_ms
        row = 0
        kept: list[WindowEmbedding] = []
        for i, (window, samples) in enumerate(zip(windows, prepared, strict=True)):
            scorers = scorers_of[window.source_id]
            if i in carried:
                self._counters[window.source_id].gated += 1
                embedding = carried[i]
            elif samples is None:
                events += self._quiet(window, scorers)
                continue
            else:
                embedding = embeddings[row : row + 1]
                row += 1
                if not np.isfinite(embedding).all():
                    self._counters[window.source_id].bad_scores += 1
                    logger.error(
                        "the model returned non-finite values for window %s", window.end_time
                    )
                    if self.gate is not None:
                        self.gate.forget(window.source_id)
                    events += self._quiet(window, scorers)
                    continue
                self._counters[window.source_id].scored += 1
                self._last_embedding[window.source_id] = embedding
            events += self._score(window, embedding, scorers)
            kept.append(
                WindowEmbedding(
                    window.source_id,
                    window.start_time,
                    window.end_time,
                    levels[i],
                    embedding[0],
                )
            )
        if kept and self.on_embeddings is not None:
            self.on_embeddings(kept)
        return events

    def _end_unscored(
        self, scorers_of: Mapping[str, tuple[LabelSetScorer, ...]], now: datetime
    ) -> list[Event]:
        keep = {
            (source_id, scorer.name, label)
            for source_id, scorers in scorers_of.items()
            for scorer in scorers
            for label in scorer.labels
        }
        return self.tracker.close_except(keep, now)

    def _prepare(self, window: Window) -> np.ndarray | None:
        """The samples to embed, or None when the window must not reach the model."""
        samples = window.samples
        counters = self._counters[window.source_id]
        if not np.isfinite(samples).all():
            counters.nonfinite += 1
            if counters.nonfinite == 1 or counters.nonfinite % 100 == 0:
                logger.warning(
                    "%d window(s) of %s held NaN/Inf samples and were skipped (latest %s)",
                    counters.nonfinite,
                    window.source_id,
                    window.end_time,
                )
            return None
        if not np.any(samples):
            counters.silent += 1  # a muted or disconnected input: nothing for the model
            counters.level_dbfs = -math.inf
            return None
        if np.count_nonzero(np.abs(samples) >= CLIP_LEVEL) > CLIPPED_FRACTION * len(samples):
            counters.clipped += 1  # still scored: a loud alarm clips, and must still be heard
        offset = float(samples.mean())
        if abs(offset) > DC_LEVEL:
            counters.dc += 1
            samples = samples - np.float32(offset)
        counters.level_dbfs = rms_dbfs(samples)
        if self.min_dbfs is not None and counters.level_dbfs < self.min_dbfs:
            counters.quiet_gated += 1  # below the energy gate: not worth the model's time
            return None
        return samples

    def _score(
        self, window: Window, embedding: np.ndarray, scorers: tuple[LabelSetScorer, ...]
    ) -> list[Event]:
        feed = self._feed_of[window.source_id]
        counters = self._counters[window.source_id]
        events: list[Event] = []
        every: list[Scores] = []
        stream_seconds = window.end_index / feed.windower.rate_hz
        for scorer in scorers:
            probs = scorer.score(embedding)[0]
            scores = Scores(
                window, scorer.name, dict(zip(scorer.labels, map(float, probs), strict=True))
            )
            every.append(scores)
            found = detections_of(scores, scorer, self.embedder.model_id)
            counters.detections += len(found)
            for detection in found:
                key = (detection.label_set, detection.label)
                counters.detections_by_label[key] = counters.detections_by_label.get(key, 0) + 1
            events += self.tracker.update(
                window.source_id, scorer.name, scorer.labels, found, stream_seconds, window.end_time
            )
            if logger.isEnabledFor(logging.DEBUG):
                best = max(scores.scores.items(), key=lambda kv: kv[1])
                logger.debug(
                    "%s %s %s: top %s %.3f", window.source_id, window.end_time, scorer.name, *best
                )
        if self.on_scores is not None and every:
            self.on_scores(every)
        return events

    def _quiet(self, window: Window, scorers: tuple[LabelSetScorer, ...]) -> list[Event]:
        """A window that was not scored still moves time on: open events can end."""
        feed = self._feed_of[window.source_id]
        stream_seconds = window.end_index / feed.windower.rate_hz
        events: list[Event] = []
        for scorer in scorers:
            events += self.tracker.update(
                window.source_id, scorer.name, scorer.labels, [], stream_seconds, window.end_time
            )
        return events
