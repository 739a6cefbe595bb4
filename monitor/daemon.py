"""Wires source, ring buffer, worker and outputs together and supervises them."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from types import FrameType
from typing import TYPE_CHECKING

from monitor.config import Config, SourceConfig
from monitor.errors import EXIT_OK, ConfigError, MonitorError, SourceError
from monitor.events import EventTracker
from monitor.frames import Event
from monitor.payloads import Topics, event_messages, event_payload, initial_state_messages
from monitor.ringbuffer import RingBuffer
from monitor.scoring import build_scorers
from monitor.source import Source
from monitor.windowing import Windower
from monitor.worker import ScoringWorker

if TYPE_CHECKING:
    from monitor.publisher import MqttPublisher

log = logging.getLogger(__name__)

SHUTDOWN_BUDGET_SECONDS = 4.0  # the whole stop must fit in 5 s (systemd, the contract)
STATUS_LOG_INTERVAL_SECONDS = 600.0


class _StartupInterrupted(BaseException):
    """A stop signal arrived while the model or the source was still being set up.

    A BaseException, like KeyboardInterrupt, so that library code catching Exception while
    loading the model cannot turn a stop request into a load error.
    """


def make_source(cfg: SourceConfig) -> Source:
    """The source the config asks for (the capture module is imported only when needed)."""
    if cfg.type == "microphone":
        from monitor.capture import MicrophoneSource

        return MicrophoneSource(cfg)
    from monitor.filesource import FileSource

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

    def __init__(self, config: Config) -> None:
        self.config = config
        self._stop = threading.Event()
        self._starting = True
        self.publisher: MqttPublisher | None = None
        self.source: Source | None = None
        self.worker: ScoringWorker | None = None
        self.ring: RingBuffer | None = None
        self.tracker = EventTracker(config.events.cooldown_seconds, config.events.hold_seconds)
        self.outputs: Outputs | None = None

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
        topics = Topics.from_config(cfg.mqtt)
        if not cfg.mqtt.enabled and not cfg.output.json_lines:
            log.warning("mqtt and output.json_lines are both off: events go only to the log")
        if cfg.mqtt.enabled:
            from monitor.publisher import MqttPublisher

            # Reads the password file now: a missing secret is a config error, before any load.
            self.publisher = MqttPublisher(cfg.mqtt, topics.status)
        from monitor.model import load_clap

        runner = load_clap(cfg.model)
        scorers = build_scorers(cfg.label_sets, runner.embed_text, runner.logit_scale)
        self.source = make_source(source_cfg)
        fmt = self.source.open()
        self.ring = RingBuffer(
            max(1, round(source_cfg.buffer_seconds * fmt.sample_rate_hz)),
            fmt.channels,
            fmt.sample_rate_hz,
        )
        lossless = source_cfg.type == "file" and not source_cfg.realtime
        windower = Windower(
            self.ring,
            self.source.source_id,
            cfg.window.seconds,
            cfg.window.hop_seconds,
            catch_up=lossless,
        )
        self.outputs = Outputs(self.publisher, topics, cfg.mqtt.qos, cfg.output.json_lines)
        if self.publisher is not None:
            self.publisher.start()
            for msg in initial_state_messages(cfg.label_sets, topics, cfg.mqtt.qos):
                self.publisher.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
        source = self.source
        self.worker = ScoringWorker(
            windower, runner, scorers, self.tracker, self.outputs, lambda: source.finished
        )
        self.worker.start()
        self.source.start(self.ring)
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

    def _supervise(self) -> int:
        assert self.worker is not None and self.source is not None
        next_status = time.monotonic() + STATUS_LOG_INTERVAL_SECONDS
        while not self._stop.wait(0.2):
            if self.worker.drained.is_set():
                log.info("source finished; all audio scored")
                break
            source_error = self.source.error
            if source_error is not None:
                if isinstance(source_error, MonitorError):
                    raise source_error
                raise SourceError(str(source_error)) from source_error
            if not self.worker.is_alive():
                worker_error = self.worker.error
                if isinstance(worker_error, MonitorError):
                    raise worker_error
                raise RuntimeError(f"scoring worker stopped: {worker_error!r}")
            if time.monotonic() >= next_status:
                next_status += STATUS_LOG_INTERVAL_SECONDS
                log.info("status: %s", self.status_text())
        return EXIT_OK

    def status_text(self) -> str:
        """One line of counters for logs (and, later, systemd STATUS)."""
        parts: list[str] = []
        if self.worker is not None:
            w = self.worker.stats()
            parts.append(
                f"windows={w.windows_scored} skipped_lag={w.windows_skipped_lagging} "
                f"skipped_nonfinite={w.windows_skipped_nonfinite} events={w.events} "
                f"inference_ms={w.last_inference_ms:.0f}"
            )
        if self.source is not None:
            s = self.source.stats()
            parts.append(f"overflows={s.overflows}")
        if self.ring is not None:
            parts.append(f"lost_frames={self.ring.lost_frames}")
        if self.publisher is not None:
            parts.append(f"mqtt={'up' if self.publisher.connected else 'down'}")
        return " ".join(parts)

    def _shutdown(self) -> None:
        """Stop capture, let the window in flight finish, end open events, go offline."""
        self._starting = False
        deadline = time.monotonic() + SHUTDOWN_BUDGET_SECONDS
        if self.source is not None:
            self.source.stop()
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
        if self.worker is not None:
            log.info("final %s", self.status_text())
        if self.publisher is not None:
            self.publisher.stop(timeout_seconds=max(0.5, deadline - time.monotonic()))


def run_daemon(config: Config) -> int:
    """Run the monitor in the calling (main) thread; raises MonitorError for start-up failures."""
    daemon = Daemon(config)
    daemon.install_signal_handlers()
    return daemon.run()
