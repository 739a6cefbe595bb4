"""Wires source, ring buffer, worker and outputs together and supervises them."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from types import FrameType
from typing import TYPE_CHECKING

from monitor.audio.ringbuffer import RingBuffer
from monitor.audio.source import Source, StreamFormat
from monitor.audio.windowing import Windower
from monitor.config import Config, ModelConfig, SourceConfig
from monitor.errors import EXIT_OK, ConfigError, MonitorError, SourceError
from monitor.frames import Event
from monitor.outputs.mqtt.payloads import (
    Topics,
    event_messages,
    event_payload,
    initial_state_messages,
)
from monitor.pipeline.events import EventTracker
from monitor.pipeline.scoring import build_scorers
from monitor.pipeline.worker import ScoringWorker
from monitor.service.health import (
    HEALTH_DEGRADED,
    HEALTH_OK,
    Snapshot,
    capture_stalled,
    worker_stalled,
)
from monitor.service.notify import SystemdNotifier

if TYPE_CHECKING:
    from monitor.model.runner import ClapRunner
    from monitor.outputs.mqtt.publisher import MqttPublisher

log = logging.getLogger(__name__)

SHUTDOWN_BUDGET_SECONDS = 4.0  # the whole stop must fit in 5 s (systemd, the contract)
STATUS_LOG_INTERVAL_SECONDS = 600.0
STATUS_NOTIFY_INTERVAL_SECONDS = 5.0
SUPERVISE_TICK_SECONDS = 0.2
MAX_RESTART_BACKOFF_SECONDS = 30.0
SOURCE_STOP_TIMEOUT_SECONDS = 2.0
LAG_CHECK_SECONDS = 30.0
LAG_WARN_FRACTION = 0.1


class _StartupInterrupted(BaseException):
    """A stop signal arrived while the model or the source was still being set up.

    A BaseException, like KeyboardInterrupt, so that library code catching Exception while
    loading the model cannot turn a stop request into a load error.
    """


def make_source(cfg: SourceConfig) -> Source:
    """The source the config asks for (the capture module is imported only when needed)."""
    if cfg.type == "microphone":
        from monitor.audio.microphone import MicrophoneSource

        return MicrophoneSource(cfg)
    from monitor.audio.file import FileSource

    return FileSource(cfg)


class Outputs:
    """Fans each event out to MQTT (detection + retained state) and, optionally, stdout."""

    def __init__(
        self, publisher: MqttPublisher | None, topics: Topics, qos: int, json_lines: bool
    ) -> None:
        self.publisher = publisher
        self.topics = topics
        self.qos = qos
        self.json_lines = json_lines
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if self.publisher is not None:
            for msg in event_messages(event, self.topics, self.qos):
                self.publisher.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
        if self.json_lines:
            line = json.dumps(event_payload(event, self.topics.device_id), separators=(",", ":"))
            with self._lock:  # events may come from the worker and from shutdown
                sys.stdout.write(line + "\n")
                sys.stdout.flush()


class Daemon:
    """One run of the monitor: set up, supervise until stopped or drained, shut down cleanly."""

    def __init__(
        self,
        config: Config,
        *,
        source_factory: Callable[[SourceConfig], Source] = make_source,
        model_loader: Callable[[ModelConfig], ClapRunner] | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.config = config
        self.source_factory = source_factory
        self.model_loader = model_loader
        self.notifier = notifier or SystemdNotifier()
        self._stop = threading.Event()
        self._starting = True
        self.publisher: MqttPublisher | None = None
        self.topics = Topics.from_config(config.mqtt)
        self.source: Source | None = None
        self.stream_format: StreamFormat | None = None
        self.worker: ScoringWorker | None = None
        self.ring: RingBuffer | None = None
        self.tracker = EventTracker(config.events.cooldown_seconds, config.events.hold_seconds)
        self.outputs: Outputs | None = None
        self.health_state = HEALTH_OK
        self.health_detail = ""
        self.source_restarts = 0
        self._stream_started = time.monotonic()

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        if signum is not None:
            log.info("received %s, stopping", signal.Signals(signum).name)
        self._stop.set()
        if self._starting and signum is not None:
            raise _StartupInterrupted

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.request_stop)

    def run(self) -> int:
        """Run until a signal or the end of a finite source; returns the exit code."""
        try:
            self._start()
        except _StartupInterrupted:
            log.info("stopped during start-up")
            self._shutdown()
            return EXIT_OK
        except MonitorError:
            self._shutdown()
            raise
        try:
            code = self._supervise()
        finally:
            self._shutdown()
        return code

    def _start(self) -> None:
        cfg = self.config
        source_cfg = cfg.source
        if source_cfg is None:  # load_config(require_source=True) already refuses this
            raise ConfigError("source: required key is missing")
        if not cfg.mqtt.enabled and not cfg.output.json_lines:
            log.warning("mqtt and output.json_lines are both off: events go only to the log")
        if cfg.mqtt.enabled:
            from monitor.outputs.mqtt.publisher import MqttPublisher

            # Reads the password file now: a missing secret is a config error, before any load.
            self.publisher = MqttPublisher(cfg.mqtt, self.topics.status)
        self.notifier.status("loading model")
        if self.model_loader is None:
            from monitor.model.runner import load_clap

            self.model_loader = load_clap
        runner = self.model_loader(cfg.model)
        scorers = build_scorers(cfg.label_sets, runner.embed_text, runner.logit_scale)
        self.source = self.source_factory(source_cfg)
        fmt = self.stream_format = self.source.open()
        self.ring = RingBuffer(
            max(1, round(source_cfg.buffer_seconds * fmt.sample_rate_hz)),
            fmt.channels,
            fmt.sample_rate_hz,
        )
        lossless = source_cfg.lossless
        windower = Windower(
            self.ring,
            self.source.source_id,
            cfg.window.seconds,
            cfg.window.hop_seconds,
            catch_up=lossless,
        )
        self.outputs = Outputs(self.publisher, self.topics, cfg.mqtt.qos, cfg.output.json_lines)
        if self.publisher is not None:
            self.publisher.start()
            for msg in initial_state_messages(cfg.label_sets, self.topics, cfg.mqtt.qos):
                self.publisher.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
        source = self.source
        self.worker = ScoringWorker(
            windower,
            runner,
            scorers,
            self.tracker,
            self.outputs,
            lambda: source.finished,
            max_batch=cfg.model.max_batch,
            min_dbfs=cfg.window.min_dbfs,
        )
        self.worker.start()
        self.source.start(self.ring)
        self._stream_started = time.monotonic()
        self._starting = False
        log.info(
            "monitoring %s (%d Hz, %d ch): %d label set(s), %.1f s windows every %.1f s",
            fmt.description,
            fmt.sample_rate_hz,
            fmt.channels,
            len(scorers),
            cfg.window.seconds,
            cfg.window.hop_seconds,
        )

    @property
    def _live(self) -> bool:
        """A device that should deliver audio all the time (a file may pause or end)."""
        return self.config.source is not None and self.config.source.live

    def _supervise(self) -> int:
        assert self.worker is not None and self.source is not None
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
            if self.worker.drained.is_set():
                log.info("source finished; all audio scored")
                break
            if not self.worker.is_alive():
                worker_error = self.worker.error
                if isinstance(worker_error, MonitorError):
                    raise worker_error
                raise RuntimeError(f"scoring worker stopped: {worker_error!r}")
            source_error = self.source.error
            stats = self.source.stats()
            if self._live and (
                source_error is not None
                or capture_stalled(stats, self._stream_started, now, health.capture_stall_seconds)
            ):
                reason = (
                    str(source_error)
                    if source_error is not None
                    else f"no audio for {health.capture_stall_seconds:g} s"
                )
                self._recover_source(reason)
                continue
            if source_error is not None:
                if isinstance(source_error, MonitorError):
                    raise source_error
                raise SourceError(str(source_error)) from source_error
            if not ready and stats.blocks > 0:
                ready = True
                self.notifier.ready(self.snapshot().status_text())
                self._publish_health()
                log.info("ready: model loaded and audio arriving")
            worker_ok = not worker_stalled(self.worker.stats(), now, health.worker_stall_seconds)
            if watchdog_every and now >= next_watchdog and worker_ok:
                # Only while both capture (checked above) and scoring make progress.
                self.notifier.watchdog()
                next_watchdog = now + watchdog_every
            if now >= next_status:
                next_status = now + STATUS_NOTIFY_INTERVAL_SECONDS
                self.notifier.status(self.snapshot().status_text())
            if now >= next_log:
                next_log = now + STATUS_LOG_INTERVAL_SECONDS
                log.info("status: %s", self.snapshot().status_text())
            if now >= next_lag_check:
                next_lag_check = now + LAG_CHECK_SECONDS
                lag = self._check_lag(lag)
        return EXIT_OK

    def _check_lag(self, previous: tuple[int, int]) -> tuple[int, int]:
        """Warn when scoring is slower than real time (windows skipped, audio dropped)."""
        assert self.worker is not None
        w = self.worker.stats()
        scored = w.windows_scored - previous[0]
        skipped = w.windows_skipped_lagging - previous[1]
        if skipped > LAG_WARN_FRACTION * max(1, scored + skipped):
            log.warning(
                "scoring is slower than real time: %d of %d windows skipped in the last %.0f s "
                "(last inference %.0f ms); raise window.hop_seconds or lower the model's cost",
                skipped,
                scored + skipped,
                LAG_CHECK_SECONDS,
                w.last_inference_ms,
            )
        return (w.windows_scored, w.windows_skipped_lagging)

    def _recover_source(self, reason: str) -> None:
        """Mark the source degraded, close it and reopen it with backoff; SourceError if it
        cannot be brought back (exit 75: systemd restarts us with a fresh device list)."""
        assert self.source is not None and self.ring is not None
        health = self.config.health
        self._set_health(HEALTH_DEGRADED, reason)
        log.warning("source %s degraded: %s; reopening", self.source.source_id, reason)
        delay = health.restart_backoff_seconds
        failures = 0
        while not self._stop.is_set():
            self._stop_source()
            if failures >= health.max_source_restarts:
                raise SourceError(
                    f"source {self.source.source_id}: {reason}; reopening failed {failures} time(s)"
                )
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, MAX_RESTART_BACKOFF_SECONDS)
            self.source_restarts += 1
            try:
                fmt = self.source.open()
                if (fmt.sample_rate_hz, fmt.channels) != (
                    self.ring.sample_rate_hz,
                    self.ring.channels,
                ):
                    raise SourceError(
                        f"reopened as {fmt.sample_rate_hz} Hz / {fmt.channels} ch, was "
                        f"{self.ring.sample_rate_hz} Hz / {self.ring.channels} ch"
                    )
                blocks_before = self.source.stats().blocks
                self.source.start(self.ring)
                self._stream_started = time.monotonic()
                if self._first_block_after(blocks_before, health.capture_stall_seconds):
                    log.info("source %s recovered", self.source.source_id)
                    self._set_health(HEALTH_OK, "")
                    return
                reason = f"no audio for {health.capture_stall_seconds:g} s after reopening"
            except (MonitorError, OSError, ValueError) as err:
                reason = str(err)
            failures += 1
            log.warning("reopening %s failed (%d): %s", self.source.source_id, failures, reason)

    def _stop_source(self) -> None:
        """source.stop() in a helper thread: a driver that hangs on close cannot hang us."""
        source = self.source
        if source is None:
            return
        stopper = threading.Thread(target=source.stop, name="source-stop", daemon=True)
        stopper.start()
        stopper.join(SOURCE_STOP_TIMEOUT_SECONDS)
        if stopper.is_alive():
            log.error(
                "source %s did not stop within %.0f s; abandoned to a background thread",
                source.source_id,
                SOURCE_STOP_TIMEOUT_SECONDS,
            )

    def _first_block_after(self, blocks_before: int, timeout_seconds: float) -> bool:
        assert self.source is not None
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.source.stats().blocks > blocks_before:
                return True
            if self.source.error is not None or self._stop.wait(SUPERVISE_TICK_SECONDS):
                return False
        return False

    def _set_health(self, state: str, detail: str) -> None:
        changed = (state, detail) != (self.health_state, self.health_detail)
        self.health_state, self.health_detail = state, detail
        if changed:
            self.notifier.status(self.snapshot().status_text())
            self._publish_health()

    def _publish_health(self) -> None:
        if self.publisher is not None and self.source is not None:
            self.publisher.publish(
                self.topics.health,
                self.snapshot().payload(self.source.source_id),
                qos=1,
                retain=True,
            )

    def snapshot(self) -> Snapshot:
        """The counters of every stage, for status lines and the health topic."""
        assert self.worker is not None and self.source is not None
        published = self.publisher.stats() if self.publisher is not None else None
        return Snapshot(
            state=self.health_state,
            detail=self.health_detail,
            source=self.source.stats(),
            worker=self.worker.stats(),
            lost_frames=self.ring.lost_frames if self.ring is not None else 0,
            source_restarts=self.source_restarts,
            mqtt_connected=self.publisher.connected if self.publisher is not None else None,
            outbox_pending=published.outbox_pending if published is not None else 0,
            outbox_dropped=published.outbox_dropped if published is not None else 0,
        )

    def _shutdown(self) -> None:
        """Stop capture, let the window in flight finish, end open events, go offline."""
        self._starting = False
        self.notifier.stopping()
        deadline = time.monotonic() + SHUTDOWN_BUDGET_SECONDS
        self._stop_source()
        if self.worker is not None:
            self.worker.stop()
            if self.worker.is_alive():
                self.worker.join(timeout=max(0.1, deadline - time.monotonic() - 1.0))
            if self.worker.is_alive():
                log.warning("scoring worker still busy at shutdown; its window is abandoned")
            elif self.outputs is not None and self.ring is not None:
                end = datetime.fromtimestamp(
                    self.ring.time_of(self.ring.written_frames), tz=timezone.utc
                )
                for event in self.tracker.close_all(end):
                    self.worker.emit(event)
        if self.worker is not None and self.source is not None:
            log.info("final %s", self.snapshot().status_text())
        if self.publisher is not None:
            self.publisher.stop(timeout_seconds=max(0.5, deadline - time.monotonic()))
        self.notifier.close()


def run_daemon(config: Config) -> int:
    """Run the monitor in the calling (main) thread; raises MonitorError for start-up failures."""
    daemon = Daemon(config)
    daemon.install_signal_handlers()
    return daemon.run()
