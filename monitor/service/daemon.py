"""One run of the monitor: build the pipeline, start it, supervise it, shut it down in time."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from monitor.config import Config, load_config
from monitor.errors import EXIT_OK
from monitor.outputs.sink import Sink
from monitor.service.health import Snapshot
from monitor.service.notify import SystemdNotifier
from monitor.service.observers import combine
from monitor.service.pipeline import (
    ModelLoader,
    Pipeline,
    PipelineObserver,
    SourceFactory,
    build_pipeline,
    load_model,
    make_source,
)
from monitor.service.supervision import Supervisor

if TYPE_CHECKING:
    from monitor.service.metrics import MetricsRecorder
    from monitor.service.prometheus import MetricsEndpoint

logger = logging.getLogger(__name__)

SHUTDOWN_BUDGET_SECONDS = 4.0  # the whole stop must fit in systemd's 5 s stop timeout


class _StartupInterrupted(BaseException):
    """A stop signal arrived while the model or the source was still being set up.

    A BaseException, like KeyboardInterrupt, so that library code catching Exception while
    loading the model cannot turn a stop request into a load error.
    """


class Daemon:
    """Set up, supervise until stopped or drained, shut down cleanly.

    `observer`, when given, hears when streaming starts and about every batch scored.
    `extra_sinks` are outputs of the caller's own, after the configured ones (listen's view).
    """

    def __init__(
        self,
        config: Config,
        *,
        source_factory: SourceFactory = make_source,
        model_loader: ModelLoader = load_model,
        notifier: SystemdNotifier | None = None,
        observer: PipelineObserver | None = None,
        config_path: Path | None = None,
        extra_sinks: Sequence[Sink] = (),
    ) -> None:
        """`config_path`: the file `config` came from, re-read on SIGHUP (labels only)."""
        self.config = config
        self.config_path = config_path
        self.source_factory = source_factory
        self.model_loader = model_loader
        self.notifier = notifier or SystemdNotifier()
        self.observer = observer
        self.extra_sinks = tuple(extra_sinks)
        self._stop = threading.Event()
        self._starting = True
        # Set once the pipeline is built; read only by snapshot() and friends from outside.
        self._supervisor: Supervisor | None = None

    @property
    def pipeline(self) -> Pipeline | None:
        """The pipeline of this run, once built (it stays readable after the run)."""
        return self._supervisor.pipeline if self._supervisor is not None else None

    @property
    def source_restarts(self) -> int:
        return self._supervisor.source_restarts if self._supervisor is not None else 0

    def snapshot(self) -> Snapshot | None:
        """The counters of every stage, or None before the pipeline is built."""
        return self._supervisor.snapshot() if self._supervisor is not None else None

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        if signum is not None:
            logger.info("received %s, stopping", signal.Signals(signum).name)
        self._stop.set()
        if self._starting and signum is not None:
            self._starting = False  # once: a second signal must not interrupt the clean-up
            raise _StartupInterrupted

    def request_reload(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Re-read the config file's labels (SIGHUP); the controller thread does the work."""
        pipeline = self.pipeline
        if pipeline is None:
            logger.warning("reload ignored: still starting (send SIGHUP again once running)")
            return
        logger.info("reloading %s", self.config_path or "the config (no file: nothing to do)")
        pipeline.controller.request_reload()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)

    def _reload_config(self) -> Callable[[], Config] | None:
        path = self.config_path
        if path is None:
            return None
        return lambda: load_config(path)

    def run(self) -> int:
        """Run until a signal or the end of a finite source; returns the exit code.

        Start-up errors (MonitorError) propagate once whatever was started is stopped.
        """
        supervisor: Supervisor | None = None
        endpoint: MetricsEndpoint | None = None
        recorder = self._metrics_recorder()
        observer = combine(self.observer, recorder)
        try:
            pipeline = build_pipeline(
                self.config,
                source_factory=self.source_factory,
                model_loader=self.model_loader,
                status=self.notifier.status,
                observer=observer,
                reload_config=self._reload_config(),
                extra_sinks=(*self.extra_sinks, *([recorder] if recorder is not None else [])),
            )
            supervisor = self._supervisor = Supervisor(
                pipeline, self.config, self.notifier, self._stop, observer
            )
            supervisor.start()
            self._starting = False
            if recorder is not None:
                # Once a stop signal no longer interrupts: a server made is a server stopped.
                endpoint = self._serve_metrics(supervisor, recorder)
            self._log_started(pipeline)
            return supervisor.supervise()
        except _StartupInterrupted:
            logger.info("stopped during start-up")
            return EXIT_OK
        finally:
            if endpoint is not None:
                endpoint.stop()  # first: quick, and no scrape reads a pipeline being stopped
            self._shutdown(supervisor)

    def _metrics_recorder(self) -> MetricsRecorder | None:
        """What counts events and inference times for /metrics; None when metrics are off
        (then prometheus_client is never imported)."""
        if not self.config.metrics.enabled:
            return None
        from monitor.service.metrics import MetricsRecorder

        return MetricsRecorder()

    def _serve_metrics(
        self, supervisor: Supervisor, recorder: MetricsRecorder
    ) -> MetricsEndpoint | None:
        from monitor.service.metrics import BuildInfo, read_metrics
        from monitor.service.prometheus import serve_metrics

        build = BuildInfo.of(self.config, supervisor.pipeline.model_runs_as)
        return serve_metrics(self.config.metrics, lambda: read_metrics(supervisor, recorder, build))

    def _log_started(self, pipeline: Pipeline) -> None:
        window = self.config.window
        for lane in pipeline.lanes:
            fmt = lane.stream_format
            logger.info(
                "monitoring %s: %s (%d Hz, %d ch): %s, %.1f s windows every %.1f s",
                lane.source.source_id,
                fmt.description,
                fmt.sample_rate_hz,
                fmt.channels,
                ", ".join(s.name for s in pipeline.worker.scorers(lane.config.id)) or "no set",
                window.seconds,
                window.hop_seconds,
            )

    def _shutdown(self, supervisor: Supervisor | None) -> None:
        """Within the budget: stop the pipeline if one was built, then tell systemd."""
        self._starting = False
        self.notifier.stopping()
        deadline = time.monotonic() + SHUTDOWN_BUDGET_SECONDS
        if supervisor is not None:
            supervisor.shutdown(deadline)
        self.notifier.close()


def run_daemon(config: Config, config_path: Path | None = None) -> int:
    """Run the monitor in the calling (main) thread; raises MonitorError for start-up failures.

    SIGHUP re-reads the label sets and profiles of `config_path`."""
    daemon = Daemon(config, config_path=config_path)
    daemon.install_signal_handlers()
    return daemon.run()
