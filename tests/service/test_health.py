"""The health snapshot: its status line and the report the outputs publish."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

from monitor.audio.source import SourceStats
from monitor.clips.recorder import ClipStats
from monitor.history.writer import WriterStats
from monitor.outputs.sink import DeliveryStats
from monitor.pipeline.worker import WorkerStats
from monitor.service.health import Snapshot, SourceSnapshot

T = datetime(2026, 3, 1, 12, 0, 5, tzinfo=timezone.utc)


def snapshot(delivery: DeliveryStats | None, sources: int = 1) -> Snapshot:
    worker = WorkerStats(
        windows_scored=10,
        windows_skipped_nonfinite=1,
        windows_skipped_silent=2,
        windows_skipped_lagging=3,
        windows_clipped=4,
        windows_dc_offset=5,
        windows_skipped_quiet=6,
        windows_gated=15,
        detections=7,
        events=8,
        last_inference_ms=12.4,
        last_progress_monotonic=0.0,
        level_dbfs=-40.0,
    )
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
        "windows_gated": 15,
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


def test_clips_and_history_counters_follow_the_outbox_only_when_they_are_on() -> None:
    snap = dataclasses.replace(
        snapshot(None),
        clips=ClipStats(written=5, failed=2, pending=1, deleted=3, failing=False),
        history=WriterStats(900, 4, 60, 0.2, None),
    )
    counters = snap.report(T).counters
    assert list(counters)[-8:] == [
        "outbox_pending",
        "outbox_dropped",
        "clips_written",
        "clips_failed",
        "clips_deleted",
        "history_windows_written",
        "history_windows_dropped",
        "history_windows_deleted",
    ]
    assert [counters[k] for k in list(counters)[-6:]] == [5, 2, 3, 900, 4, 60]
    assert snap.status_text().endswith("clips=5 clips_failed=2 history=900 history_dropped=4")
    assert "clips" not in snapshot(None).status_text()


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
