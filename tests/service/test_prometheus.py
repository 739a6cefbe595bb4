"""The Prometheus endpoint on constructed readings: every series, a real HTTP scrape, the port."""

from __future__ import annotations

import logging
import math
import socket
import urllib.error

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from monitor.audio.source import SourceStats
from monitor.clips.recorder import ClipStats
from monitor.config import MetricsConfig
from monitor.history.writer import WriterStats
from monitor.outputs.sink import DeliveryStats
from monitor.pipeline.worker import WorkerStats
from monitor.service.health import HEALTH_DEGRADED, HEALTH_OK, Snapshot, SourceSnapshot
from monitor.service.metrics import BuildInfo, EventKey, HistogramReading, MetricsReading
from monitor.service.prometheus import LEVEL_FLOOR_DBFS, MonitorCollector, serve_metrics
from tests.support.metrics import samples, scrape, types, value
from tests.support.netstreams import free_port


def worker_stats(base: int, level_dbfs: float) -> WorkerStats:
    # scored, nonfinite, silent, lagging, clipped, dc, quiet, detections, events, ms, progress
    return WorkerStats(
        windows_scored=base,
        windows_skipped_nonfinite=base + 1,
        windows_skipped_silent=base + 2,
        windows_skipped_lagging=base + 3,
        windows_clipped=base + 4,
        windows_dc_offset=base + 5,
        windows_skipped_quiet=base + 6,
        windows_gated=base + 7,
        detections=0,
        events=0,
        last_inference_ms=9.0,
        last_progress_monotonic=0.0,
        level_dbfs=level_dbfs,
    )


def reading(
    delivery: DeliveryStats | None = None,
    clips: ClipStats | None = None,
    history: WriterStats | None = None,
) -> MetricsReading:
    kitchen = SourceSnapshot(
        "kitchen", HEALTH_OK, "", SourceStats(50, 8000, 2, None), worker_stats(10, -23.5), 7, 0
    )
    porch = SourceSnapshot(
        "porch",
        HEALTH_DEGRADED,
        "no audio for 2 s",
        SourceStats(9, 900, 0, None),
        worker_stats(100, -math.inf),
        0,
        3,
    )
    snap = Snapshot(
        HEALTH_DEGRADED,
        "porch: no audio",
        worker_stats(110, -23.5),
        (kitchen, porch),
        delivery,
        clips,
        history,
    )
    return MetricsReading(
        snapshot=snap,
        labels={
            "kitchen": (("alarms", "smoke alarm"), ("alarms", "glass breaking")),
            "porch": (("pets", "dog barking"),),
        },
        detections={"kitchen": {("alarms", "smoke alarm"): 4}, "porch": {("pets", "cat"): 2}},
        events={
            EventKey("kitchen", "alarms", "smoke alarm", "start"): 2,
            EventKey("kitchen", "alarms", "smoke alarm", "end"): 1,
            # A label removed live: its counts stay, as counters must.
            EventKey("porch", "pets", "cat", "start"): 1,
        },
        inference_seconds=HistogramReading((0.01, 0.1, 1.0), (1, 5, 0, 2), 12.5, 8),
        build=BuildInfo("1.2.3", "laion/clap-htsat-unfused", "onnx", "int8"),
    )


def render(read: MetricsReading | None) -> str:
    registry = CollectorRegistry()
    registry.register(MonitorCollector(lambda: read))
    return generate_latest(registry).decode()


def test_every_series_of_a_constructed_snapshot() -> None:
    text = render(reading(DeliveryStats(connected=True, pending=3, dropped=4)))
    found = samples(text)
    assert types(text) == {
        "audio_monitor_build_info": "gauge",  # an Info is a gauge of 1 in the text format
        "audio_monitor_windows_scored": "counter",
        "audio_monitor_windows_skipped": "counter",
        "audio_monitor_windows_gated": "counter",
        "audio_monitor_windows_clipped": "counter",
        "audio_monitor_windows_dc_offset": "counter",
        "audio_monitor_detections": "counter",
        "audio_monitor_events": "counter",
        "audio_monitor_inference_seconds": "histogram",
        "audio_monitor_input_level_dbfs": "gauge",
        "audio_monitor_input_overflows": "counter",
        "audio_monitor_lost_frames": "counter",
        "audio_monitor_source_restarts": "counter",
        "audio_monitor_source_ok": "gauge",
        "audio_monitor_mqtt_connected": "gauge",
        "audio_monitor_mqtt_outbox_pending": "gauge",
        "audio_monitor_mqtt_outbox_dropped": "counter",
    }
    assert (
        value(
            found,
            "audio_monitor_build_info",
            version="1.2.3",
            model="laion/clap-htsat-unfused",
            backend="onnx",
            precision="int8",
        )
        == 1
    )
    assert value(found, "audio_monitor_windows_scored_total", source="kitchen") == 10
    assert value(found, "audio_monitor_windows_scored_total", source="porch") == 100
    skipped = {
        reason: value(found, "audio_monitor_windows_skipped_total", source="kitchen", reason=reason)
        for reason in ("nonfinite", "silent", "lagging", "quiet")
    }
    assert skipped == {"nonfinite": 11, "silent": 12, "lagging": 13, "quiet": 16}
    assert value(found, "audio_monitor_windows_gated_total", source="kitchen") == 17
    assert value(found, "audio_monitor_windows_clipped_total", source="kitchen") == 14
    assert value(found, "audio_monitor_windows_dc_offset_total", source="kitchen") == 15
    assert value(found, "audio_monitor_input_overflows_total", source="kitchen") == 2
    assert value(found, "audio_monitor_lost_frames_total", source="kitchen") == 7
    assert value(found, "audio_monitor_source_restarts_total", source="porch") == 3
    assert value(found, "audio_monitor_input_level_dbfs", source="kitchen") == -23.5
    assert value(found, "audio_monitor_input_level_dbfs", source="porch") == LEVEL_FLOOR_DBFS
    assert value(found, "audio_monitor_source_ok", source="kitchen") == 1
    assert value(found, "audio_monitor_source_ok", source="porch") == 0
    assert value(found, "audio_monitor_mqtt_connected") == 1
    assert value(found, "audio_monitor_mqtt_outbox_pending") == 3
    assert value(found, "audio_monitor_mqtt_outbox_dropped_total") == 4


def test_clips_and_history_have_their_series_only_when_they_are_on() -> None:
    clips = ClipStats(written=5, failed=2, pending=1, deleted=3, failing=True)
    history = WriterStats(
        windows_written=900, windows_dropped=4, windows_deleted=60, write_seconds=0.2, error=None
    )
    text = render(reading(clips=clips, history=history))
    found = samples(text)
    assert value(found, "audio_monitor_clips_written_total") == 5
    assert value(found, "audio_monitor_clips_failed_total") == 2
    assert value(found, "audio_monitor_clips_deleted_total") == 3
    assert value(found, "audio_monitor_clips_pending") == 1
    assert value(found, "audio_monitor_clips_failing") == 1
    assert value(found, "audio_monitor_history_windows_written_total") == 900
    assert value(found, "audio_monitor_history_windows_dropped_total") == 4
    assert value(found, "audio_monitor_history_windows_deleted_total") == 60
    assert value(found, "audio_monitor_history_ok") == 1
    assert types(text)["audio_monitor_clips_written"] == "counter"
    assert types(text)["audio_monitor_clips_pending"] == "gauge"
    broken = WriterStats(900, 4, 60, 0.2, error="database disk image is malformed")
    assert value(samples(render(reading(history=broken))), "audio_monitor_history_ok") == 0
    off = render(reading())
    assert "audio_monitor_clips" not in off and "audio_monitor_history" not in off


def test_every_scored_label_has_its_series_from_zero_and_removed_ones_keep_theirs() -> None:
    found = samples(render(reading()))

    def detections(source: str, label_set: str, label: str) -> float:
        name = "audio_monitor_detections_total"
        return value(found, name, source=source, label_set=label_set, label=label)

    def events(source: str, label_set: str, label: str, kind: str) -> float:
        name = "audio_monitor_events_total"
        return value(found, name, source=source, label_set=label_set, label=label, kind=kind)

    assert detections("kitchen", "alarms", "smoke alarm") == 4
    assert detections("kitchen", "alarms", "glass breaking") == 0
    assert detections("porch", "pets", "dog barking") == 0
    assert detections("porch", "pets", "cat") == 2
    assert events("kitchen", "alarms", "smoke alarm", "start") == 2
    assert events("kitchen", "alarms", "smoke alarm", "end") == 1
    assert events("kitchen", "alarms", "glass breaking", "start") == 0
    assert events("porch", "pets", "cat", "start") == 1
    assert events("porch", "pets", "cat", "end") == 0
    # Only label sets of a source's own: no kitchen series for the porch's pets.
    assert not any(
        name == "audio_monitor_events_total" and ("label_set", "pets") in labels
        for name, labels in found
        if ("source", "kitchen") in labels
    )


def test_the_histogram_is_cumulative_with_sum_and_count() -> None:
    found = samples(render(reading()))
    buckets = {
        le: value(found, "audio_monitor_inference_seconds_bucket", le=le)
        for le in ("0.01", "0.1", "1.0", "+Inf")
    }
    assert buckets == {"0.01": 1, "0.1": 6, "1.0": 6, "+Inf": 8}
    assert value(found, "audio_monitor_inference_seconds_count") == 8
    assert value(found, "audio_monitor_inference_seconds_sum") == 12.5


def test_no_broker_output_no_mqtt_series_and_no_reading_no_series() -> None:
    text = render(reading(delivery=None))
    assert "audio_monitor_windows_scored_total" in text
    assert "mqtt" not in text
    assert render(None) == ""


def test_served_over_http_and_the_port_is_free_again_after_stop() -> None:
    cfg = MetricsConfig(enabled=True, port=free_port())
    endpoint = serve_metrics(cfg, reading)
    assert endpoint is not None
    try:
        assert endpoint.port == cfg.port
        found = samples(scrape(cfg.port))
        assert value(found, "audio_monitor_windows_scored_total", source="porch") == 100
    finally:
        endpoint.stop()
    with pytest.raises(urllib.error.URLError):
        scrape(cfg.port, timeout_seconds=2.0)
    # A daemon restarted in the same process binds the same port again.
    again = serve_metrics(cfg, reading)
    assert again is not None
    again.stop()


def test_a_taken_port_is_one_warning_and_no_endpoint(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        caplog.set_level(logging.INFO, logger="monitor.service.prometheus")
        assert serve_metrics(MetricsConfig(enabled=True, port=port), reading) is None
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            f"metrics: cannot listen on 127.0.0.1:{port} (Address already in use); "
            "running without metrics",
        )
    ]
