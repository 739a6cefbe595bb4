"""The health snapshot: its status line and the report the outputs publish."""

from __future__ import annotations

from datetime import datetime, timezone

from monitor.audio.source import SourceStats
from monitor.outputs.sink import DeliveryStats
from monitor.pipeline.worker import WorkerStats
from monitor.service.health import Snapshot, SourceSnapshot

T = datetime(2026, 3, 1, 12, 0, 5, tzinfo=timezone.utc)


def snapshot(delivery: DeliveryStats | None, sources: int = 1) -> Snapshot:
    worker = WorkerStats(10, 1, 2, 3, 4, 5, 6, 7, 8, 12.4, 0.0, -30.0)
    source = SourceStats(blocks=5, frames=100, overflows=9, last_block_monotonic=None)
    each = tuple(
        SourceSnapshot(f"mic{k}" if k else "mic", "ok", "", source, worker, 11, 1)
        for k in range(sources)
    )
    return Snapshot("ok", "", worker, each, delivery)


def test_report_keeps_the_health_payload_fields() -> None:
    report = snapshot(DeliveryStats(connected=True, pending=13, dropped=14)).report(T)
    assert (report.state, report.detail, report.time) == ("ok", "", T)
    assert [s.source_id for s in report.sources] == ["mic"]
    expected = {
        "windows_scored": 10,
        "windows_skipped_lagging": 3,
        "windows_skipped_silent": 2,
        "windows_skipped_quiet": 6,
        "windows_skipped_nonfinite": 1,
        "windows_clipped": 4,
        "windows_dc_offset": 5,
        "lost_frames": 11,
        "input_overflows": 9,
        "source_restarts": 1,
        "outbox_pending": 13,
        "outbox_dropped": 14,
    }
    assert dict(report.counters) == expected
    assert list(report.counters) == list(expected)  # the payload's order
    off = snapshot(None).report(T)
    assert (off.counters["outbox_pending"], off.counters["outbox_dropped"]) == (0, 0)


def test_status_line_names_the_broker_only_when_there_is_one() -> None:
    text = snapshot(DeliveryStats(connected=False, pending=2, dropped=1)).status_text()
    assert text.startswith("ok windows=10 events=8 skipped_lag=3")
    assert text.endswith("inference_ms=12 mqtt=down outbox=2 outbox_dropped=1")
    assert "mqtt" not in snapshot(None).status_text()


def test_several_sources_add_up_and_each_keeps_its_own() -> None:
    two = snapshot(None, sources=2)
    report = two.report(T)
    assert (report.counters["lost_frames"], report.counters["input_overflows"]) == (22, 18)
    assert report.counters["source_restarts"] == 2
    assert [dict(s.counters)["lost_frames"] for s in report.sources] == [11, 11]
    assert "sources=mic:ok,mic1:ok" in two.status_text()
    assert "sources=" not in snapshot(None).status_text()
