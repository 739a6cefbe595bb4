"""The Prometheus endpoint: a reading of the monitor as metric families, served over HTTP."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer

from monitor.config import MetricsConfig
from monitor.service.health import HEALTH_OK
from monitor.service.metrics import EventKey, MetricsReading

logger = logging.getLogger(__name__)

PREFIX = "audio_monitor"
# Silence and "no window yet" are -inf dBFS; Grafana draws nothing for that, so the gauge
# stops at a level no microphone reaches (its own noise is around -90 dBFS).
LEVEL_FLOOR_DBFS = -120.0
POLL_SECONDS = 0.1  # how quickly the server thread notices shutdown: the stop budget is 4 s
SKIP_REASONS = ("nonfinite", "silent", "quiet", "lagging")
EVENT_KINDS = ("start", "end")


def families(reading: MetricsReading) -> list[Metric]:
    """Every series of one reading, named and labelled for Prometheus."""
    snap = reading.snapshot
    src = ["source"]

    def counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
        return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)

    scored = counter("windows_scored", "Windows scored by the model.", src)
    skipped = counter(
        "windows_skipped",
        "Windows that did not reach the model, by reason: nonfinite (NaN/Inf samples), "
        "silent (all zero), quiet (below window.min_dbfs), lagging (scoring fell behind).",
        ["source", "reason"],
    )
    gated = counter(
        "windows_gated",
        "Windows the change gate let through without the model, the last scores carried.",
        src,
    )
    clipped = counter("windows_clipped", "Windows scored with over 1 % of samples clipped.", src)
    dc = counter("windows_dc_offset", "Windows scored after removing a DC offset.", src)
    overflows = counter("input_overflows", "Capture overflows reported by the input.", src)
    lost = counter("lost_frames", "Audio frames overwritten before they were windowed.", src)
    restarts = counter("source_restarts", "Attempts to reopen a failed or stalled source.", src)
    level = GaugeMetricFamily(
        f"{PREFIX}_input_level_dbfs",
        f"RMS level of the latest window in dBFS ({LEVEL_FLOOR_DBFS:g} for silence or none yet).",
        labels=src,
    )
    source_ok = GaugeMetricFamily(
        f"{PREFIX}_source_ok", "1 while the source is ok, 0 while degraded or failed.", labels=src
    )
    for s in snap.sources:
        w, sid = s.worker, [s.source_id]
        scored.add_metric(sid, w.windows_scored)
        for reason, value in zip(
            SKIP_REASONS,
            (
                w.windows_skipped_nonfinite,
                w.windows_skipped_silent,
                w.windows_skipped_quiet,
                w.windows_skipped_lagging,
            ),
            strict=True,
        ):
            skipped.add_metric([s.source_id, reason], value)
        gated.add_metric(sid, w.windows_gated)
        clipped.add_metric(sid, w.windows_clipped)
        dc.add_metric(sid, w.windows_dc_offset)
        overflows.add_metric(sid, s.source.overflows)
        lost.add_metric(sid, s.lost_frames)
        restarts.add_metric(sid, s.restarts)
        level.add_metric(sid, max(w.level_dbfs, LEVEL_FLOOR_DBFS))
        source_ok.add_metric(sid, 1.0 if s.state == HEALTH_OK else 0.0)

    detections = counter(
        "detections",
        "Windows in which a label reached its threshold.",
        ["source", "label_set", "label"],
    )
    events = counter(
        "events",
        "Events started and ended (kind: start or end), as published.",
        ["source", "label_set", "label", "kind"],
    )
    for source_id, pairs in _label_pairs(reading).items():
        counts = reading.detections.get(source_id, {})
        for label_set, label in pairs:
            detections.add_metric([source_id, label_set, label], counts.get((label_set, label), 0))
            for kind in EVENT_KINDS:
                value = reading.events.get(EventKey(source_id, label_set, label, kind), 0)
                events.add_metric([source_id, label_set, label, kind], value)

    h = reading.inference_seconds
    cumulative, running = [], 0
    for bound, count in zip((*h.upper_bounds, float("inf")), h.counts, strict=True):
        running += count
        cumulative.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
    inference = HistogramMetricFamily(
        f"{PREFIX}_inference_seconds",
        "The model's time per window (a batch's time divided among its windows).",
        buckets=cumulative,
        sum_value=h.total,
    )

    b = reading.build
    build = InfoMetricFamily(
        f"{PREFIX}_build",
        "What is running: package version and the model as configured.",
        value={
            "version": b.version,
            "model": b.model,
            "backend": b.backend,
            "precision": b.precision,
        },
    )
    out: list[Metric] = [
        build,
        scored,
        skipped,
        gated,
        clipped,
        dc,
        detections,
        events,
        inference,
        level,
        overflows,
        lost,
        restarts,
        source_ok,
    ]
    d = snap.delivery
    if d is not None:  # only with an output that talks to a broker
        out += _unlabelled(
            ("mqtt_connected", "gauge", "1 while connected to the MQTT broker.", int(d.connected)),
            (
                "mqtt_outbox_pending",
                "gauge",
                "Messages waiting for the broker's acknowledgement.",
                d.pending,
            ),
            ("mqtt_outbox_dropped", "counter", "Messages given up on (outbox full).", d.dropped),
        )
    if snap.clips is not None:  # only with clips on
        c = snap.clips
        out += _unlabelled(
            ("clips_written", "counter", "Event clips written with their sidecars.", c.written),
            ("clips_failed", "counter", "Clips that could not be written (disk full).", c.failed),
            ("clips_deleted", "counter", "Clips removed by retention (size or age).", c.deleted),
            ("clips_pending", "gauge", "Events whose clip is being recorded now.", c.pending),
            ("clips_failing", "gauge", "1 while clips cannot be written.", int(c.failing)),
        )
    if snap.history is not None:  # only with history on
        kept = snap.history
        out += _unlabelled(
            ("history_windows_written", "counter", "Windows kept.", kept.windows_written),
            (
                "history_windows_dropped",
                "counter",
                "Windows not kept: the history writer fell behind.",
                kept.windows_dropped,
            ),
            (
                "history_windows_deleted",
                "counter",
                "Windows retention removed.",
                kept.windows_deleted,
            ),
            (
                "history_ok",
                "gauge",
                "1 while history is written; 0 after a database error.",
                int(kept.error is None),
            ),
        )
    return out


def _unlabelled(*series: tuple[str, str, str, int]) -> list[Metric]:
    """One family per (name, "counter" or "gauge", help, value), without labels."""
    out: list[Metric] = []
    for name, kind, doc, number in series:
        family: Metric
        if kind == "counter":
            family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=[])
        else:
            family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=[])
        family.add_metric([], number)
        out.append(family)
    return out


def _label_pairs(reading: MetricsReading) -> dict[str, list[tuple[str, str]]]:
    """Per source, the labels scored now (so their series exist at 0, and rate() sees the
    first event) and those counted before a live change removed them (a counter must not
    disappear while the process runs), sorted."""
    pairs: dict[str, set[tuple[str, str]]] = {}
    for source_id, scored in reading.labels.items():
        pairs.setdefault(source_id, set()).update(scored)
    for source_id, counts in reading.detections.items():
        pairs.setdefault(source_id, set()).update(counts)
    for key in reading.events:
        pairs.setdefault(key.source_id, set()).add((key.label_set, key.label))
    return {source_id: sorted(found) for source_id, found in pairs.items()}


class MonitorCollector:
    """A prometheus_client collector that takes one reading of the monitor per scrape."""

    def __init__(self, read: Callable[[], MetricsReading | None]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        reading = self.read()
        if reading is not None:
            yield from families(reading)


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args: object) -> None:
        return None


class MetricsEndpoint:
    """The HTTP server thread answering /metrics; stop() frees the port at once."""

    def __init__(self, server: ThreadingWSGIServer) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": POLL_SECONDS},
            name="metrics-http",
            daemon=True,
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()  # returns once serve_forever has (within POLL_SECONDS)
        self._server.server_close()
        self._thread.join(1.0)


def serve_metrics(
    cfg: MetricsConfig, read: Callable[[], MetricsReading | None]
) -> MetricsEndpoint | None:
    """Serve `read()` at http://host:port/metrics; None, after one warning, when that address
    cannot be had (the port is taken): detection goes on without metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(read))
    try:
        family = socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM)[0][0]

        class Server(ThreadingWSGIServer):
            address_family = family  # IPv6 for "::", as the host asks

        server = make_server(
            cfg.host, cfg.port, make_wsgi_app(registry), Server, handler_class=_QuietHandler
        )
    except OSError as err:
        logger.warning(
            "metrics: cannot listen on %s:%d (%s); running without metrics",
            cfg.host,
            cfg.port,
            err.strerror or err,
        )
        return None
    logger.info("metrics at http://%s:%d/metrics", cfg.host, cfg.port)
    return MetricsEndpoint(server)
