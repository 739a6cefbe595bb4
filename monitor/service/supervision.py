"""Starts a built pipeline, watches capture and scoring, reopens failed sources, stops it."""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from monitor.config import Config, SourceConfig
from monitor.errors import EXIT_OK, MonitorError, SourceError
from monitor.service.health import (
    HEALTH_DEGRADED,
    HEALTH_FAILED,
    HEALTH_OK,
    Snapshot,
    SourceSnapshot,
    capture_stalled,
    worker_stalled,
)
from monitor.service.notify import SystemdNotifier
from monitor.service.pipeline import Pipeline, PipelineObserver, stop_source

logger = logging.getLogger(__name__)

STATUS_LOG_INTERVAL_SECONDS = 600.0
STATUS_NOTIFY_INTERVAL_SECONDS = 5.0
SUPERVISE_TICK_SECONDS = 0.2
MAX_RESTART_BACKOFF_SECONDS = 30.0
LAG_CHECK_SECONDS = 30.0
LAG_WARN_FRACTION = 0.1
CLIPS_LEAVE_SECONDS = 1.0  # of the shutdown budget, left to the outputs after the clips


@dataclass
class _LaneState:
    """What the supervisor knows of one source; touched only by the supervising thread."""

    started_monotonic: float  # the current stream's start, for the stall check
    state: str = HEALTH_OK
    detail: str = ""
    restarts: int = 0  # reopen attempts since start
    failures: int = 0  # consecutive failed reopen attempts
    delay_seconds: float = 0.0  # the next backoff, before jitter
    retry_at: float | None = None  # degraded: when the next reopen is due
    confirming: bool = False  # reopened: waiting for its first block
    blocks_before: int = 0


class Supervisor:
    """One started pipeline and what is known about it: health per source, restarts, readiness.

    Each source is watched on its own: one that fails or stalls is marked degraded, closed and
    reopened with jittered exponential backoff while the others go on; the supervising loop
    never waits for a reopening. Microphones are given up on after health.max_source_restarts
    failed reopenings (failed); streams are retried for ever. The run ends with exit 75 only
    when no source is left running.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        config: Config,
        notifier: SystemdNotifier,
        stop: threading.Event,
        observer: PipelineObserver | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.notifier = notifier
        self.observer = observer
        self._stop = stop
        now = time.monotonic()
        self._lanes = [_LaneState(now) for _ in pipeline.lanes]
        self._random = random.Random()

    @property
    def health_state(self) -> str:
        """ok when every source is; degraded when any is degraded or failed."""
        return HEALTH_OK if all(s.state == HEALTH_OK for s in self._lanes) else HEALTH_DEGRADED

    @property
    def health_detail(self) -> str:
        return "; ".join(
            f"{lane.source.source_id}: {state.detail}" if len(self._lanes) > 1 else state.detail
            for lane, state in zip(self.pipeline.lanes, self._lanes, strict=True)
            if state.state != HEALTH_OK
        )

    @property
    def source_restarts(self) -> int:
        return sum(s.restarts for s in self._lanes)

    def start(self) -> None:
        """Outputs (online, initial states), the clip writer, then the worker, then audio into
        each ring."""
        self.pipeline.outputs.start()
        if self.pipeline.clips is not None:
            self.pipeline.clips.start()
        if self.pipeline.history is not None:
            self.pipeline.history.start()
        self.pipeline.worker.start()
        self.pipeline.controller.start()
        if self.observer is not None:
            self.observer.on_streaming_started()
        for lane, state in zip(self.pipeline.lanes, self._lanes, strict=True):
            lane.source.start(lane.ring)
            state.started_monotonic = time.monotonic()

    def supervise(self) -> int:
        """Watch until stopped or until every finite source is drained; returns the exit code."""
        worker = self.pipeline.worker
        health = self.config.health
        ready = False
        next_status = time.monotonic()
        next_log = time.monotonic() + STATUS_LOG_INTERVAL_SECONDS
        watchdog_every = (self.notifier.watchdog_seconds or 0.0) / 2
        next_watchdog = time.monotonic()
        next_lag_check = time.monotonic() + LAG_CHECK_SECONDS
        lag = {lane.source.source_id: (0, 0) for lane in self.pipeline.lanes}
        while not self._stop.wait(SUPERVISE_TICK_SECONDS):
            now = time.monotonic()
            if worker.drained.is_set():
                logger.info("every source finished; all audio scored")
                break
            if not worker.is_alive():
                worker_error = worker.error
                if isinstance(worker_error, MonitorError):
                    raise worker_error
                raise RuntimeError(f"scoring worker stopped: {worker_error!r}")
            if self._watch_sources(now):
                self._publish_health()
            self._exit_when_no_source_is_left()
            if not ready and self._all_started():
                ready = True
                self.notifier.ready(self.snapshot().status_text())
                self._publish_health()
                logger.info("ready: model loaded and audio arriving")
            worker_ok = not worker_stalled(worker.stats(), now, health.worker_stall_seconds)
            if watchdog_every and now >= next_watchdog and worker_ok and self._any_running():
                # Only while scoring makes progress and some source delivers audio.
                self.notifier.watchdog()
                next_watchdog = now + watchdog_every
            if now >= next_status:
                next_status = now + STATUS_NOTIFY_INTERVAL_SECONDS
                self.notifier.status(self.snapshot().status_text())
            if now >= next_log:
                next_log = now + STATUS_LOG_INTERVAL_SECONDS
                logger.info("status: %s", self.snapshot().status_text())
            if now >= next_lag_check:
                next_lag_check = now + LAG_CHECK_SECONDS
                lag = self._check_lag(lag)
        return EXIT_OK

    def _all_started(self) -> bool:
        """Every source has delivered audio or is known to be down (a camera that is off at
        start-up must not hold back readiness for the others)."""
        return all(
            state.state != HEALTH_OK or lane.source.stats().blocks > 0
            for lane, state in zip(self.pipeline.lanes, self._lanes, strict=True)
        )

    def _any_running(self) -> bool:
        return any(state.state == HEALTH_OK for state in self._lanes)

    def _exit_when_no_source_is_left(self) -> None:
        """SourceError (exit 75) once every source has failed or finished and one failed."""
        failed = [
            (lane, state)
            for lane, state in zip(self.pipeline.lanes, self._lanes, strict=True)
            if state.state == HEALTH_FAILED
        ]
        if not failed:
            return
        left = [
            lane
            for lane, state in zip(self.pipeline.lanes, self._lanes, strict=True)
            if state.state != HEALTH_FAILED and not lane.source.finished
        ]
        if left:
            return
        raise SourceError("; ".join(state.detail for _lane, state in failed))

    def _watch_sources(self, now: float) -> bool:
        """One look at every source: degrade, reopen, confirm, give up. True if a state
        changed (the health topics are then republished)."""
        changed = False
        for index in range(len(self.pipeline.lanes)):
            changed |= self._watch(index, now)
        return changed

    def _watch(self, index: int, now: float) -> bool:
        lane, state = self.pipeline.lanes[index], self._lanes[index]
        source, cfg = lane.source, lane.config
        if state.state == HEALTH_FAILED:
            return False
        if state.confirming:
            if source.stats().blocks > state.blocks_before:
                logger.info("source %s recovered", source.source_id)
                state.confirming = False
                state.failures = 0
                self._set_state(index, HEALTH_OK, "")
                return True
            limit = self._stall_limit(cfg)
            if source.error is not None or now - state.started_monotonic > limit:
                reason = (
                    str(source.error)
                    if source.error is not None
                    else f"no audio for {limit:g} s after reopening"
                )
                state.confirming = False
                self._reopen_failed(index, reason, now)
                return True
            return False
        if state.state == HEALTH_DEGRADED:
            if state.retry_at is not None and now >= state.retry_at:
                self._reopen(index, now)
                return state.state != HEALTH_DEGRADED
            return False
        source_error = source.error
        if not cfg.live:
            if source_error is None:
                return False
            # A file that cannot be read would fail again: that source is done, the rest go on.
            logger.error("source %s failed: %s", source.source_id, source_error)
            self._set_state(index, HEALTH_FAILED, f"source {source.source_id}: {source_error}")
            stop_source(source)
            return True
        limit = self._stall_limit(cfg)
        stalled = capture_stalled(source.stats(), state.started_monotonic, now, limit)
        if source_error is None and not stalled:
            return False
        reason = str(source_error) if source_error is not None else f"no audio for {limit:g} s"
        logger.warning("source %s degraded: %s; reopening", source.source_id, reason)
        stop_source(source)
        state.delay_seconds = self.config.health.restart_backoff_seconds
        state.failures = 0
        self._set_state(index, HEALTH_DEGRADED, reason)
        state.retry_at = now + self._jittered(state.delay_seconds)
        return True

    def _stall_limit(self, cfg: SourceConfig) -> float:
        """Seconds without audio after which this source counts as stalled."""
        return cfg.stall_limit_seconds or self.config.health.capture_stall_seconds

    def _jittered(self, delay_seconds: float) -> float:
        """50-100 % of the delay, so sources (and monitors) that failed together do not
        reconnect in step."""
        return delay_seconds * self._random.uniform(0.5, 1.0)

    def _reopen(self, index: int, now: float) -> None:
        """Open and start the source again; it counts as recovered at its first block."""
        lane, state = self.pipeline.lanes[index], self._lanes[index]
        source, ring = lane.source, lane.ring
        state.restarts += 1
        state.retry_at = None
        try:
            fmt = source.open()
            if (fmt.sample_rate_hz, fmt.channels) != (ring.sample_rate_hz, ring.channels):
                raise SourceError(
                    f"reopened as {fmt.sample_rate_hz} Hz / {fmt.channels} ch, was "
                    f"{ring.sample_rate_hz} Hz / {ring.channels} ch"
                )
            state.blocks_before = source.stats().blocks
            source.start(ring)
        except (MonitorError, OSError, ValueError) as err:
            self._reopen_failed(index, str(err), now)
            return
        state.started_monotonic = time.monotonic()
        state.confirming = True

    def _reopen_failed(self, index: int, reason: str, now: float) -> None:
        lane, state = self.pipeline.lanes[index], self._lanes[index]
        source, cfg = lane.source, lane.config
        stop_source(source)
        state.failures += 1
        logger.warning("reopening %s failed (%d): %s", source.source_id, state.failures, reason)
        limit = self.config.health.max_source_restarts
        if not cfg.reopens_forever and state.failures >= limit:
            detail = (
                f"source {source.source_id}: {reason}; reopening failed {state.failures} time(s)"
            )
            logger.error("%s; giving up on it", detail)
            self._set_state(index, HEALTH_FAILED, detail)
            return
        state.delay_seconds = min(state.delay_seconds * 2, MAX_RESTART_BACKOFF_SECONDS)
        state.retry_at = now + self._jittered(state.delay_seconds)
        self._set_state(index, HEALTH_DEGRADED, reason)

    def _set_state(self, index: int, state: str, detail: str) -> None:
        lane = self._lanes[index]
        changed = (state, detail) != (lane.state, lane.detail)
        lane.state, lane.detail = state, detail
        if changed:
            self.notifier.status(self.snapshot().status_text())

    def _check_lag(self, previous: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        """Warn, per source, when scoring is slower than real time (windows skipped)."""
        worker = self.pipeline.worker
        now: dict[str, tuple[int, int]] = {}
        for source_id, (scored_before, skipped_before) in previous.items():
            w = worker.stats(source_id)
            scored = w.windows_scored - scored_before
            skipped = w.windows_skipped_lagging - skipped_before
            if skipped > LAG_WARN_FRACTION * max(1, scored + skipped):
                logger.warning(
                    "scoring is slower than real time: %d of %d windows of %s skipped in the "
                    "last %.0f s (last inference %.0f ms); raise window.hop_seconds, use fewer "
                    "sources or lower the model's cost",
                    skipped,
                    scored + skipped,
                    source_id,
                    LAG_CHECK_SECONDS,
                    w.last_inference_ms,
                )
            now[source_id] = (w.windows_scored, w.windows_skipped_lagging)
        return now

    def _publish_health(self) -> None:
        self.pipeline.outputs.publish_health(self.snapshot().report())

    def snapshot(self) -> Snapshot:
        """The counters of every stage, for status lines and the health report."""
        worker = self.pipeline.worker
        sources = tuple(
            SourceSnapshot(
                source_id=lane.source.source_id,
                state=state.state,
                detail=state.detail,
                source=lane.source.stats(),
                worker=worker.stats(lane.source.source_id),
                lost_frames=lane.ring.lost_frames,
                restarts=state.restarts,
            )
            for lane, state in zip(self.pipeline.lanes, self._lanes, strict=True)
        )
        return Snapshot(
            state=self.health_state,
            detail=self.health_detail,
            worker=worker.stats(),
            sources=sources,
            delivery=self.pipeline.outputs.delivery(),
            clips=None if self.pipeline.clips is None else self.pipeline.clips.stats(),
            history=None if self.pipeline.history is None else self.pipeline.history.stats(),
        )

    def shutdown(self, deadline: float) -> None:
        """Stop capture, let the batch in flight finish, end open events, close the outputs."""
        worker = self.pipeline.worker
        self.pipeline.controller.stop()  # a change being embedded is abandoned
        # First: a stopped file source counts as finished, and its last window must not be
        # scored on the way out.
        worker.stop()
        for lane in self.pipeline.lanes:
            stop_source(lane.source)
        if worker.is_alive():
            worker.join(timeout=max(0.1, deadline - time.monotonic() - 1.0))
        if worker.is_alive():
            logger.warning("scoring worker still busy at shutdown; its window is abandoned")
        else:
            newest = max(
                lane.ring.time_of(lane.ring.written_frames) for lane in self.pipeline.lanes
            )
            worker.close_all(datetime.fromtimestamp(newest, tz=timezone.utc))
        if self.pipeline.clips is not None:
            # Open clips are finished with the audio there is; the outputs keep a second.
            self.pipeline.clips.stop(deadline - time.monotonic() - CLIPS_LEAVE_SECONDS)
        logger.info("final %s", self.snapshot().status_text())
        if self.pipeline.history is not None:
            # The last windows reach the file before the outputs take what time is left.
            self.pipeline.history.stop(max(0.5, (deadline - time.monotonic()) / 2))
        self.pipeline.outputs.stop(max(0.5, deadline - time.monotonic()))
