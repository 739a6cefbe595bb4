"""The pipeline is built in one place, cleans up after a failed build, and can be observed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from monitor.audio.file import FileSource
from monitor.config import Config, ModelConfig, SourceConfig
from monitor.errors import ModelError, SourceError
from monitor.frames import Event, Window
from monitor.model.runner import ClapRunner
from monitor.outputs.mqtt.sink import MqttSink
from monitor.pipeline.worker import ScoringTiming
from monitor.service.daemon import Daemon
from monitor.service.notify import SystemdNotifier
from monitor.service.pipeline import build_pipeline, make_source
from tests.support.audio import write_clip

RATE_HZ = 16000


def make_config(tmp_path: Path, model_dir: Path, **source: Any) -> Config:
    return Config.model_validate(
        {
            "model": {"precision": "fp32", "name": str(model_dir), "torch_threads": 1},
            "source": {"type": "file", "id": "clip", "buffer_seconds": 4.0, **source},
            "window": {"seconds": 1.0, "hop_seconds": 0.5},
            "label_sets": [
                {"name": "s", "threshold": 1.0, "labels": [{"name": "a", "threshold": 0.0}, "b"]}
            ],
            "events": {"cooldown_seconds": 3600},
            "mqtt": {
                "enabled": False,
                "device_id": "dev",
                "outbox": {"directory": str(tmp_path / "outbox")},
            },
            "output": {"json_lines": True},
        }
    )


@pytest.mark.parametrize("realtime", [False, True])
def test_one_lane_per_source_feeding_one_worker(
    tmp_path: Path, tiny_clap_dir: Path, runner: ClapRunner, realtime: bool
) -> None:
    clip = write_clip(tmp_path / "clip.wav", 2.0, RATE_HZ, 1)
    config = make_config(tmp_path, tiny_clap_dir, path=str(clip), realtime=realtime)
    statuses: list[str] = []
    pipeline = build_pipeline(config, model_loader=lambda _cfg: runner, status=statuses.append)
    try:
        assert statuses == ["loading model"]
        assert len(pipeline.lanes) == 1
        lane = pipeline.lanes[0]
        assert lane.config is config.source
        assert isinstance(lane.source, FileSource) and lane.source.source_id == "clip"
        assert (lane.stream_format.sample_rate_hz, lane.stream_format.channels) == (RATE_HZ, 1)
        ring = lane.ring
        assert (ring.sample_rate_hz, ring.channels, ring.capacity_frames) == (RATE_HZ, 1, 64000)
        assert lane.windower.ring is ring and lane.windower.source_id == "clip"
        # A file replayed as fast as it is read must not skip windows; a paced one may.
        assert lane.windower.catch_up is (not realtime)
        assert [feed.windower for feed in pipeline.worker.feeds] == [lane.windower]
        assert [sink.name for sink in pipeline.outputs.sinks] == ["json-lines"]
        assert not pipeline.worker.is_alive()  # built, not started
        assert not pipeline.worker.feeds[0].finished()
    finally:
        for lane in pipeline.lanes:
            lane.source.stop()


class CountingFileSource(FileSource):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1
        super().stop()


def test_a_source_that_fails_to_open_is_stopped_again(tmp_path: Path, runner: ClapRunner) -> None:
    config = make_config(tmp_path, Path("unused"), path=str(tmp_path / "missing.wav"))
    made: list[CountingFileSource] = []

    def factory(cfg: SourceConfig) -> CountingFileSource:
        made.append(CountingFileSource(cfg))
        return made[-1]

    with pytest.raises(SourceError, match=r"missing\.wav"):
        build_pipeline(config, source_factory=factory, model_loader=lambda _cfg: runner)
    assert [source.stops for source in made] == [1]


def test_a_failed_model_load_closes_the_outputs_already_made(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.wav", 1.0, RATE_HZ, 1)
    config = make_config(tmp_path, Path("unused"), path=str(clip))
    config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"enabled": True})})

    def fail(_cfg: ModelConfig) -> ClapRunner:
        raise ModelError("no weights here")

    with pytest.raises(ModelError, match="no weights here"):
        build_pipeline(config, source_factory=make_source, model_loader=fail)
    # The MQTT output holds its outbox directory locked while open: a second one can take it
    # only if the failed build closed the first.
    sink = MqttSink(config.mqtt, {"clip": config.label_sets}, per_source=False)
    sink.stop(0.5)


class Observer:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.windows: list[Window] = []
        self.events: list[Event] = []
        self.timings: list[ScoringTiming] = []

    def on_streaming_started(self) -> None:
        self.calls.append("started")

    def on_scored(
        self, windows: Sequence[Window], events: Sequence[Event], timing: ScoringTiming
    ) -> None:
        self.calls.append("scored")
        self.windows += windows
        self.events += events
        self.timings.append(timing)


def test_the_observer_sees_every_window_the_daemon_scores(
    tmp_path: Path, tiny_clap_dir: Path, runner: ClapRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = write_clip(tmp_path / "clip.wav", 5.4, RATE_HZ, 1)
    config = make_config(tmp_path, tiny_clap_dir, path=str(clip), realtime=False)
    observer = Observer()
    daemon = Daemon(
        config,
        model_loader=lambda _cfg: runner,
        notifier=SystemdNotifier(environ={}),
        observer=observer,
    )
    assert daemon.snapshot() is None
    assert daemon.run() == 0
    snapshot = daemon.snapshot()
    assert snapshot is not None
    assert observer.calls[0] == "started" and observer.calls.count("started") == 1
    assert len(observer.calls) > 1
    # Every hop position of the 5.4 s file, then the final window up to its last sample.
    ends = [w.end_index for w in observer.windows]
    assert ends == [round(RATE_HZ * (1.0 + 0.5 * k)) for k in range(9)] + [round(RATE_HZ * 5.4)]
    assert snapshot.worker.windows_scored == len(ends)
    for timing in observer.timings:
        assert timing.started_monotonic <= timing.finished_monotonic
        assert timing.inference_ms > 0
    # The observer saw the event the scoring caused; the end came at shutdown, and both went
    # out through the same path to the outputs, counted once each.
    assert [(e.kind, e.detection.label) for e in observer.events] == [("start", "a")]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(p["event"], p["label"]) for p in lines] == [("start", "a"), ("end", "a")]
    assert lines[0]["id"] == observer.events[0].detection.id
    assert snapshot.worker.events == 2
    assert snapshot.lost_frames == 0
