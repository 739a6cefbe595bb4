"""Several sources in one process: files and a real RTSP camera, one model, per-source topics."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.config import Config, ModelConfig
from monitor.model.runner import ClapRunner, load_clap
from monitor.service.daemon import Daemon
from monitor.service.notify import SystemdNotifier
from tests.support.audio import write_clip
from tests.support.broker import Broker, Subscriber
from tests.support.daemons import Running
from tests.support.netstreams import RtspServer
from tests.support.waiting import wait_until

BASE = "multi/house"
SECRET = "p4ss:w@rd/1"

pytestmark = pytest.mark.slow


class CountingLoader:
    """The real loader, counting how often the daemon loads a model."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, cfg: ModelConfig) -> ClapRunner:
        self.calls += 1
        return load_clap(cfg)


def make_config(
    model_dir: Path, broker: Broker, tmp_path: Path, sources: list[dict[str, Any]]
) -> Config:
    return Config.model_validate(
        {
            "model": {"precision": "fp32", "name": str(model_dir), "torch_threads": 1},
            "sources": sources,
            "window": {"seconds": 1.0, "hop_seconds": 0.5},
            "label_sets": [
                # Threshold 0 always fires: the tiny model's random scores cannot miss it.
                # The other label never reaches 1.0 in a softmax of two.
                {
                    "name": "alarms",
                    "threshold": 1.0,
                    "labels": [{"name": "smoke alarm", "threshold": 0.0}, "x"],
                },
                {
                    "name": "pets",
                    "threshold": 1.0,
                    "labels": [{"name": "dog barking", "threshold": 0.0}, "y"],
                },
            ],
            "events": {"cooldown_seconds": 3600},
            "scores": {"enabled": True, "interval_seconds": 1.0, "top_k": 1},
            "health": {"restart_backoff_seconds": 0.2},
            "mqtt": {
                "host": broker.host,
                "port": broker.port,
                "topic_prefix": "multi",
                "device_id": "house",
                "reconnect_min_seconds": 0.2,
                "outbox": {"directory": str(tmp_path / "outbox")},
            },
        }
    )


def starts(sub: Subscriber, source: str, label_set: str) -> list[dict[str, Any]]:
    return [
        body
        for body in map(json.loads, sub.payloads(f"{BASE}/{source}/{label_set}/detection"))
        if body["event"] == "start"
    ]


def source_states(sub: Subscriber, source: str) -> list[str]:
    return [json.loads(p)["state"] for p in sub.payloads(f"{BASE}/{source}/health")]


def test_two_files_and_a_camera_in_one_process_with_one_model(
    tmp_path: Path,
    tiny_clap_dir: Path,
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
    rtsp_server: RtspServer,
    daemons: list[Running],
) -> None:
    kitchen = write_clip(tmp_path / "kitchen.wav", 30.0, 16000, 1)
    nursery = write_clip(tmp_path / "nursery.wav", 30.0, 44100, 2)
    sources = [
        {"type": "file", "id": "kitchen", "path": str(kitchen), "label_sets": ["alarms"]},
        {"type": "file", "id": "nursery", "path": str(nursery)},
        {"type": "stream", "id": "porch", "url": rtsp_server.url, "label_sets": ["pets"]},
    ]
    loader = CountingLoader()
    sub = mqtt_subscriber(mosquitto, "multi/#")
    daemon = Daemon(
        make_config(tiny_clap_dir, mosquitto, tmp_path, sources),
        model_loader=loader,
        notifier=SystemdNotifier(environ={}),
    )
    daemons.append(run := Running(daemon))
    on = {
        "kitchen": "alarms/smoke_alarm",
        "nursery": "pets/dog_barking",
        "porch": "pets/dog_barking",
    }
    sub.wait_for(
        lambda _: all(
            sub.payloads(f"{BASE}/{source}/{state}/state")[-1:] == ["ON"]
            for source, state in on.items()
        ),
        timeout_seconds=60,
        what="an event from every source",
    )
    assert loader.calls == 1  # one model for three sources
    # Each source's events carry its id and go to its own topics, for its own label sets.
    for source in ("kitchen", "nursery", "porch"):
        for body in sub.payloads(f"{BASE}/{source}/alarms/detection") + sub.payloads(
            f"{BASE}/{source}/pets/detection"
        ):
            assert json.loads(body)["source"] == source
    assert starts(sub, "kitchen", "pets") == [] and starts(sub, "porch", "alarms") == []
    assert len(starts(sub, "nursery", "alarms")) == 1
    dogs = starts(sub, "nursery", "pets") + starts(sub, "porch", "pets")
    assert len({d["event_id"] for d in dogs}) == 2  # two rooms hearing a dog: two events
    # What each source is hearing: its own label sets only, the top label of each.
    sub.wait_for(
        lambda _: all(sub.payloads(f"{BASE}/{s}/scores") for s in on), what="scores of each"
    )
    sets_heard = {s: set(json.loads(sub.payloads(f"{BASE}/{s}/scores")[-1])["sets"]) for s in on}
    assert sets_heard == {"kitchen": {"alarms"}, "nursery": {"alarms", "pets"}, "porch": {"pets"}}
    assert daemon.pipeline is not None
    formats = {lane.source.source_id: lane.stream_format for lane in daemon.pipeline.lanes}
    assert (formats["kitchen"].sample_rate_hz, formats["kitchen"].channels) == (16000, 1)
    assert (formats["nursery"].sample_rate_hz, formats["nursery"].channels) == (44100, 2)
    assert (formats["porch"].sample_rate_hz, formats["porch"].channels) == (48000, 1)
    run.stop()
    assert run.code == 0 and run.error is None
    assert sub.payloads(f"{BASE}/porch/pets/dog_barking/state")[-1] == "OFF"


def test_a_camera_that_reboots_is_reopened_while_the_others_go_on(
    tmp_path: Path,
    tiny_clap_dir: Path,
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
    rtsp_server: RtspServer,
    daemons: list[Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clip = write_clip(tmp_path / "kitchen.wav", 5.0, 16000, 1)
    (tmp_path / "camera-password").write_text(SECRET + "\n")
    sources = [
        {"type": "file", "id": "kitchen", "path": str(clip), "loop": True},
        {
            "type": "stream",
            "id": "porch",
            "url": rtsp_server.url,
            "username": "viewer",
            "password_file": str(tmp_path / "camera-password"),
        },
    ]
    sub = mqtt_subscriber(mosquitto, "multi/#")
    caplog.set_level(logging.DEBUG)
    daemon = Daemon(
        make_config(tiny_clap_dir, mosquitto, tmp_path, sources),
        notifier=SystemdNotifier(environ={}),
    )
    daemons.append(run := Running(daemon))
    sub.wait_for(lambda _: source_states(sub, "porch")[-1:] == ["ok"], 60, what="porch ok")
    wait_until(lambda: daemon.snapshot() is not None, "started")
    rtsp_server.kill()  # the camera reboots
    sub.wait_for(lambda _: "degraded" in source_states(sub, "porch"), 30, what="porch degraded")
    snapshot = daemon.snapshot()
    assert snapshot is not None
    kitchen_before = snapshot.sources[0].worker.windows_scored
    wait_until(
        lambda: (
            (s := daemon.snapshot()) is not None
            and s.sources[0].worker.windows_scored > kitchen_before + 3
        ),
        "the kitchen scored on while the camera was away",
        15,
    )
    assert set(source_states(sub, "kitchen")) == {"ok"}
    monitor = json.loads(sub.payloads(f"{BASE}/health")[-1])
    assert monitor["sources"] == {"kitchen": "ok", "porch": "degraded"}
    rtsp_server.start()  # back on the same port
    sub.wait_for(lambda _: source_states(sub, "porch")[-1:] == ["ok"], 60, what="porch back")
    assert json.loads(sub.payloads(f"{BASE}/health")[-1])["state"] == "ok"
    assert daemon.source_restarts >= 1
    run.stop()
    assert run.code == 0 and run.error is None
    # The password appears in no payload and in no log line; the user name may.
    for message in sub.messages():
        assert SECRET not in message.payload and "p4ss" not in message.payload
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "p4ss" not in logged and "w%40rd" not in logged
    assert "viewer:***@" in logged
