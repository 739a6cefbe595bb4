"""Starts a built pipeline, watches capture and scoring, reopens failed sources, stops it."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

from monitor.config import Config
from monitor.errors import EXIT_OK, MonitorError, SourceError
from monitor.service.health import (
    HEALTH_DEGRADED,
    HEALTH_OK,
    Snapshot,
    capture_stalled,
    worker_stalled,
)
from monitor.service.notify import SystemdNotifier
from monitor.service.pipeline import Lane, Pipeline, PipelineObserver, stop_source

logger = logging.getLogger(__name__)

STATUS_LOG_INTERVAL_SECONDS = 600.0
STATUS_NOTIFY_INTERVAL_SECONDS = 5.0
SUPERVISE_TICK_SECONDS = 0.2
MAX_RESTART_BACKOFF_SECONDS = 30.0
LAG_CHECK_SECONDS = 30.0
LAG_WARN_FRACTION = 0.1


class Supervisor:
    """One started pipeline and what is known about it: health, restarts, readiness."""

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
        self.health_state = HEALTH_OK
        self.health_detail = ""
        self.source_restarts = 0
        self._stream_started = [time.monotonic()] * len(pipeline.lanes)

    def start(self) -> None:
        """Outputs (online, initial states), then the worker, then audio into each ring."""
        self.pipeline.outputs.start()
        self.pipeline.worker.start()
        if self.observer is not None:
            self.observer.on_streaming_started()
        for index, lane in enumerate(self.pipeline.lanes):
            lane.source.start(lane.ring)
            self._stream_started[index] = time.monotonic()

    def supervise(self) -> int:
        """Watch until stopped or until a finite source is drained; returns the exit code."""
        worker = self.pipeline.worker
        health = self.config.health
        ready = False
        next_status = time.monotonic()
        next_log = time.monotonic() + STATUS_LOG_INTERVAL_SECONDS
        watchdog_every = (self.notifier.watchdog_seconds or 0.0) / 2
        next_watchdog = time.monotonic()
        next_lag_check = time.monotonic() + LAG_CHECK_SECONDS
        lag = (0, 0)
        while not self._stop.wait(SUPERVISE_TICK_SECONDS):
            now = time.monotonic()
            if worker.drained.is_set():
                logger.info("source finished; all audio scored")
                break
            if not worker.is_alive():
                worker_error = worker.error
                if isinstance(worker_error, MonitorError):
                    raise worker_error
                raise RuntimeError(f"scoring worker stopped: {worker_error!r}")
            if self._recovered_a_source(now):
                continue
            if not ready and all(lane.source.stats().blocks > 0 for lane in self.pipeline.lanes):
                ready = True
                self.notifier.ready(self.snapshot().status_text())
                self._publish_health()
                logger.info("ready: model loaded and audio arriving")
            worker_ok = not worker_stalled(worker.stats(), now, health.worker_stall_seconds)
            if watchdog_every and now >= next_watchdog and worker_ok:
                # Only while both capture (checked above) and scoring make progress.
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

    def _recovered_a_source(self, now: float) -> bool:
        """Reopen a live source that failed or stalled (True when one was); raise the error
        of any other source that failed."""
        health = self.config.health
        for index, lane in enumerate(self.pipeline.lanes):
            source_error = lane.source.error
            stats = lane.source.stats()
            started = self._stream_started[index]
            if lane.config.live and (
                source_error is not None
                or capture_stalled(stats, started, now, health.capture_stall_seconds)
            ):
                reason = (
                    str(source_error)
                    if source_error is not None
                    else f"no audio for {health.capture_stall_seconds:g} s"
                )
                self._recover_source(index, reason)
                return True
            if source_error is not None:
                if isinstance(source_error, MonitorError):
                    raise source_error
                raise SourceError(str(source_error)) from source_error
        return False

    def _check_lag(self, previous: tuple[int, int]) -> tuple[int, int]:
        """Warn when scoring is slower than real time (windows skipped, audio dropped)."""
        w = self.pipeline.worker.stats()
        scored = w.windows_scored - previous[0]
        skipped = w.windows_skipped_lagging - previous[1]
        if skipped > LAG_WARN_FRACTION * max(1, scored + skipped):
            logger.warning(
                "scoring is slower than real time: %d of %d windows skipped in the last %.0f s "
                "(last inference %.0f ms); raise window.hop_seconds or lower the model's cost",
                skipped,
                scored + skipped,
                LAG_CHECK_SECONDS,
                w.last_inference_ms,
            )
        return (w.windows_scored, w.windows_skipped_lagging)

    def _recover_source(self, index: int, reason: str) -> None:
        """Mark the source degraded, close it and reopen it with backoff; SourceError if it
        cannot be brought back (exit 75: systemd restarts us with a fresh device list)."""
        lane = self.pipeline.lanes[index]
        source, ring = lane.source, lane.ring
        health = self.config.health
        self._set_health(HEALTH_DEGRADED, reason)
        logger.warning("source %s degraded: %s; reopening", source.source_id, reason)
        delay = health.restart_backoff_seconds
        failures = 0
        while not self._stop.is_set():
            stop_source(source)
            if failures >= health.max_source_restarts:
                raise SourceError(
                    f"source {source.source_id}: {reason}; reopening failed {failures} time(s)"
                )
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, MAX_RESTART_BACKOFF_SECONDS)
            self.source_restarts += 1
            try:
                fmt = source.open()
                if (fmt.sample_rate_hz, fmt.channels) != (ring.sample_rate_hz, ring.channels):
                    raise SourceError(
                        f"reopened as {fmt.sample_rate_hz} Hz / {fmt.channels} ch, was "
                        f"{ring.sample_rate_hz} Hz / {ring.channels} ch"
                    )
                blocks_before = source.stats().blocks
                source.start(ring)
                self._stream_started[index] = time.monotonic()
                if self._first_block_after(lane, blocks_before, health.capture_stall_seconds):
                    logger.info("source %s recovered", source.source_id)
                    self._set_health(HEALTH_OK, "")
                    return
                reason = f"no audio for {health.capture_stall_seconds:g} s after reopening"
            except (MonitorError, OSError, ValueError) as err:
                reason = str(err)
            failures += 1
            logger.warning("reopening %s failed (%d): %s", source.source_id, failures, reason)

    def _first_block_after(self, lane: Lane, blocks_before: int, timeout_seconds: float) -> bool:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if lane.source.stats().blocks > blocks_before:
                return True
            if lane.source.error is not None or self._stop.wait(SUPERVISE_TICK_SECONDS):
                return False
        return False

    def _set_health(self, state: str, detail: str) -> None:
        changed = (state, detail) != (self.health_state, self.health_detail)
        self.health_state, self.health_detail = state, detail
        if changed:
            self.notifier.status(self.snapshot().status_text())
            self._publish_health()

    def _publish_health(self) -> None:
        source_id = self.pipeline.lanes[0].source.source_id
        self.pipeline.outputs.publish_health(self.snapshot().report(source_id))

    def snapshot(self) -> Snapshot:
        """The counters of every stage, for status lines and the health report.

        The health report names one source: the first lane's.
        """
        first = self.pipeline.lanes[0]
        return Snapshot(
            state=self.health_state,
            detail=self.health_detail,
            source=first.source.stats(),
            worker=self.pipeline.worker.stats(),
            lost_frames=first.ring.lost_frames,
            source_restarts=self.source_restarts,
            delivery=self.pipeline.outputs.delivery(),
        )

    def shutdown(self, deadline: float) -> None:
        """Stop capture, let the window in flight finish, end open events, close the outputs."""
        for lane in self.pipeline.lanes:
            stop_source(lane.source)
        worker = self.pipeline.worker
        worker.stop()
        if worker.is_alive():
            worker.join(timeout=max(0.1, deadline - time.monotonic() - 1.0))
        if worker.is_alive():
            logger.warning("scoring worker still busy at shutdown; its window is abandoned")
        else:
            newest = max(
                lane.ring.time_of(lane.ring.written_frames) for lane in self.pipeline.lanes
            )
            worker.close_all(datetime.fromtimestamp(newest, tz=timezone.utc))
        logger.info("final %s", self.snapshot().status_text())
        self.pipeline.outputs.stop(max(0.5, deadline - time.monotonic()))
