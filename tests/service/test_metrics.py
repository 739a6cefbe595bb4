"""Metrics: the recorder on its own, then /metrics scraped from a real daemon run."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.config import Config
from monitor.frames import Detection, Event, Position, Window
from monitor.model.runner import ClapRunner
from monitor.pipeline.worker import ScoringTiming
from monitor.service.daemon import Daemon
from monitor.service.health import Snapshot
from monitor.service.metrics import EventKey, MetricsRecorder
from monitor.service.notify import SystemdNotifier
from tests.support.audio import write_clip
from tests.support.daemons import Running
from tests.support.metrics import Samples, samples, scrape, value
from tests.support.netstreams import free_port, is_listening
from tests.support.waiting import wait_until

T = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def event(kind: str, source: str = "kitchen", label: str = "smoke alarm") -> Event:
    detection = Detection("d", source, "alarms", label, 0.9, 0.5, {label: 0.9}, T, T, "m")
    return Event(kind, "e", detection, T)


def timing(inference_ms: float, embedded: int) -> ScoringTiming:
    return ScoringTiming(0.0, 1.0, inference_ms, embedded)


def test_the_recorder_counts_events_per_label_and_kind() -> None:
    recorder = MetricsRecorder()
    for e in (event("start"), event("end"), event("start"), event("start", "porch", "x")):
        recorder.publish_event(e)
    assert recorder.events() == {
        EventKey("kitchen", "alarms", "smoke alarm", "start"): 2,
        EventKey("kitchen", "alarms", "smoke alarm", "end"): 1,
        EventKey("porch", "alarms", "x", "start"): 1,
    }


def test_the_recorder_times_each_window_that_met_the_model() -> None:
    recorder = MetricsRecorder((0.01, 0.1))
    recorder.on_scored([], [], timing(30.0, 3))  # a batch of three, 30 ms per window
    recorder.on_scored([], [], timing(0.0, 0))  # every window gated: nothing timed
    recorder.on_scored([], [], timing(100.0, 1))  # exactly on a bound: counted in it (le)
    recorder.on_scored([], [], timing(5000.0, 1))
    h = recorder.inference_seconds()
    assert h.upper_bounds == (0.01, 0.1)
    assert h.counts == (0, 4, 1)
    assert h.count == 5
    assert h.total == pytest.approx(0.09 + 0.1 + 5.0)


# --- a real daemon --------------------------------------------------------------------------


class HeldModel:
    """The tiny runner, with a hold: while closed, the worker waits before its next forward
    pass, so every counter stands still and a scrape can be compared exactly."""

    def __init__(self, runner: ClapRunner) -> None:
        self.runner = runner
        self.open = threading.Event()
        self.open.set()
        self.waiting = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)

    def embed_audio(
        self, windows: Sequence[np.ndarray], positions: Sequence[Position] | None = None
    ) -> np.ndarray:
        if not self.open.is_set():
            self.waiting.set()
            self.open.wait(30)
            self.waiting.clear()
        return self.runner.embed_audio(windows, positions)


class EventLog:
    """A bench-like observer: every event of every scored batch."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.embedded = 0

    def on_streaming_started(self) -> None:
        return None

    def on_scored(
        self, windows: Sequence[Window], events: Sequence[Event], timing: ScoringTiming
    ) -> None:
        self.events += events
        self.embedded += timing.embedded

    def count(self, source: str, label_set: str, label: str, kind: str) -> int:
        return sum(
            (e.detection.source_id, e.detection.label_set, e.detection.label, e.kind)
            == (source, label_set, label, kind)
            for e in self.events
        )


def make_config(
    tmp_path: Path, port: int, enabled: bool = True, **sections: dict[str, object]
) -> Config:
    clip = write_clip(tmp_path / "kitchen.wav", 6.0, 16000, 1)
    return Config.model_validate(
        {
            **sections,
            # The runner is handed in: the name is only shown.
            "model": {"precision": "fp32", "name": "tiny"},
            "sources": [{"type": "file", "id": "kitchen", "path": str(clip), "loop": True}],
            "window": {"seconds": 1.0, "hop_seconds": 0.5},
            "label_sets": [
                {
                    "name": "alarms",
                    "threshold": 1.0,
                    # Threshold 0 always fires; "glass" never reaches 1.0 in a softmax of two.
                    "labels": [{"name": "smoke alarm", "threshold": 0.0}, "glass"],
                }
            ],
            "events": {"cooldown_seconds": 3600},
            "mqtt": {"enabled": False},
            "metrics": {"enabled": enabled, "port": port},
        }
    )


def started(daemon: Daemon, windows: int = 1) -> Snapshot:
    wait_until(
        lambda: (s := daemon.snapshot()) is not None and s.worker.windows_scored >= windows,
        f"{windows} window(s) scored",
        60,
    )
    snap = daemon.snapshot()
    assert snap is not None
    return snap


def health_counters(snapshot: Snapshot) -> dict[str, int]:
    return dict(snapshot.sources[0].counters())


SCRAPED = {  # the health payload's counter -> the series (and reason) that shows it
    "windows_scored": ("audio_monitor_windows_scored_total", {}),
    "windows_skipped_lagging": ("audio_monitor_windows_skipped_total", {"reason": "lagging"}),
    "windows_skipped_silent": ("audio_monitor_windows_skipped_total", {"reason": "silent"}),
    "windows_skipped_quiet": ("audio_monitor_windows_skipped_total", {"reason": "quiet"}),
    "windows_skipped_nonfinite": ("audio_monitor_windows_skipped_total", {"reason": "nonfinite"}),
    "windows_gated": ("audio_monitor_windows_gated_total", {}),
    "windows_clipped": ("audio_monitor_windows_clipped_total", {}),
    "windows_dc_offset": ("audio_monitor_windows_dc_offset_total", {}),
    "lost_frames": ("audio_monitor_lost_frames_total", {}),
    "input_overflows": ("audio_monitor_input_overflows_total", {}),
    "source_restarts": ("audio_monitor_source_restarts_total", {}),
}


def scraped_counters(found: Samples) -> dict[str, int]:
    return {
        name: int(value(found, series, source="kitchen", **labels))
        for name, (series, labels) in SCRAPED.items()
    }


def test_metrics_scraped_from_a_run_agree_with_the_health_counters(
    tmp_path: Path, runner: ClapRunner, daemons: list[Running]
) -> None:
    port = free_port()
    model, log = HeldModel(runner), EventLog()
    daemon = Daemon(
        make_config(tmp_path, port),
        model_loader=lambda _cfg: model,  # a ClapRunner in all but name
        notifier=SystemdNotifier(environ={}),
        observer=log,
    )
    daemons.append(run := Running(daemon))
    started(daemon, windows=3)
    wait_until(lambda: log.count("kitchen", "alarms", "smoke alarm", "start") == 1, "an event")

    # Running freely: every counter scraped is at most what the health report says a moment
    # later (both only grow), and the windows scored are counted by both.
    found = samples(scrape(port))
    after = health_counters(daemon.snapshot() or pytest.fail("no snapshot"))
    scraped = scraped_counters(found)
    assert all(scraped[name] <= after[name] for name in SCRAPED), (scraped, after)
    assert 0 < scraped["windows_scored"] <= after["windows_scored"]
    assert value(found, "audio_monitor_source_ok", source="kitchen") == 1
    assert -120 < value(found, "audio_monitor_input_level_dbfs", source="kitchen") < 0
    build = {"version": "0.1.0", "model": "tiny", "backend": "torch", "precision": "fp32"}
    assert value(found, "audio_monitor_build_info", **build) == 1
    assert not any(name.startswith("audio_monitor_mqtt") for name, _ in found)  # no broker

    # Held before its next forward pass, the worker changes nothing: the scrape and the
    # health snapshot agree exactly, and so do the events the observer saw.
    model.open.clear()
    assert model.waiting.wait(30)
    try:
        found = samples(scrape(port))
        snap = daemon.snapshot()
        assert snap is not None
        assert scraped_counters(found) == health_counters(snap)
        scored = snap.sources[0].worker.windows_scored
        assert value(found, "audio_monitor_inference_seconds_count") == scored == log.embedded
        assert value(found, "audio_monitor_inference_seconds_sum") > 0
        for label, kind in [("smoke alarm", "start"), ("smoke alarm", "end"), ("glass", "start")]:
            assert value(
                found,
                "audio_monitor_events_total",
                source="kitchen",
                label_set="alarms",
                label=label,
                kind=kind,
            ) == log.count("kitchen", "alarms", label, kind)
        assert snap.worker.events == 1
        labels = {"source": "kitchen", "label_set": "alarms"}
        smoke = value(found, "audio_monitor_detections_total", **labels, label="smoke alarm")
        assert smoke == scored == snap.worker.detections  # it fires in every window
        assert value(found, "audio_monitor_detections_total", **labels, label="glass") == 0
    finally:
        model.open.set()

    run.stop()
    assert run.code == 0 and run.error is None
    assert not is_listening(port)  # closed at shutdown: the next run can bind it
    again = Daemon(make_config(tmp_path, port), model_loader=lambda _cfg: runner)
    daemons.append(rerun := Running(again))
    started(again)
    assert value(samples(scrape(port)), "audio_monitor_windows_scored_total", source="kitchen") > 0
    rerun.stop()
    assert rerun.code == 0 and rerun.error is None


def test_clip_and_history_series_are_the_health_snapshot_s(
    tmp_path: Path, runner: ClapRunner, daemons: list[Running]
) -> None:
    port = free_port()
    model = HeldModel(runner)
    config = make_config(
        tmp_path,
        port,
        clips={"enabled": True, "directory": str(tmp_path / "clips"), "format": "wav"},
        history={"enabled": True, "path": str(tmp_path / "history.sqlite3")},
    )
    daemon = Daemon(config, model_loader=lambda _cfg: model)
    daemons.append(run := Running(daemon))
    # The smoke alarm fires from the first window and its event stays open (cooldown): its
    # clip is being recorded.
    wait_until(
        lambda: (s := daemon.snapshot()) is not None and s.clips is not None and s.clips.pending,
        "a clip being recorded",
        60,
    )
    model.open.clear()
    assert model.waiting.wait(30)
    try:
        found = samples(scrape(port))
        snap = daemon.snapshot()
        assert snap is not None and snap.clips is not None and snap.history is not None
        assert value(found, "audio_monitor_clips_pending") == snap.clips.pending == 1
        assert value(found, "audio_monitor_clips_written_total") == snap.clips.written
        assert value(found, "audio_monitor_clips_failing") == 0
        written = value(found, "audio_monitor_history_windows_written_total")
        assert written == snap.history.windows_written
        assert value(found, "audio_monitor_history_ok") == 1
        counters = snap.report().counters
        assert counters["clips_written"] == snap.clips.written
        assert counters["history_windows_written"] == written
    finally:
        model.open.set()
    run.stop()
    assert run.code == 0 and run.error is None
    # At shutdown the open event ended and its clip was written; the history kept every
    # window scored.
    final = daemon.snapshot()
    assert final is not None and final.clips is not None and final.history is not None
    assert final.clips.written == 1 and final.clips.failed == 0
    assert final.history.windows_written == final.worker.windows_scored > 0


def test_disabled_metrics_start_no_server(
    tmp_path: Path, runner: ClapRunner, daemons: list[Running]
) -> None:
    port = free_port()
    daemon = Daemon(make_config(tmp_path, port, enabled=False), model_loader=lambda _: runner)
    daemons.append(run := Running(daemon))
    started(daemon)
    assert not is_listening(port)
    assert "metrics-http" not in {t.name for t in threading.enumerate()}
    run.stop()
    assert run.code == 0 and run.error is None


def test_a_taken_port_warns_once_and_detection_runs_on(
    tmp_path: Path,
    runner: ClapRunner,
    daemons: list[Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = Daemon(make_config(tmp_path, port), model_loader=lambda _: runner)
        daemons.append(run := Running(daemon))
        started(daemon, windows=2)
        run.stop()
    assert run.code == 0 and run.error is None
    lines = [r.getMessage() for r in caplog.records if "metrics" in r.getMessage()]
    assert lines == [
        f"metrics: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "running without metrics"
    ]
