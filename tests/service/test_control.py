"""Labels changed while the monitor runs: over MQTT end to end, across a restart, and by SIGHUP."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.config import Config
from monitor.frames import Event, Window
from monitor.pipeline.worker import ScoringTiming
from monitor.service.daemon import Daemon
from monitor.service.notify import SystemdNotifier
from tests.support.audio import write_clip
from tests.support.broker import Broker, Subscriber
from tests.support.daemons import Running
from tests.support.processes import PipeLines
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

RATE_HZ = 16000
HOP_FRAMES = RATE_HZ // 2


class WindowLog:
    """Every window the worker scored, in order (the observer the bench uses too)."""

    def __init__(self) -> None:
        self.start_indices: list[int] = []
        self._lock = threading.Lock()

    def on_streaming_started(self) -> None:
        return None

    def on_scored(
        self, windows: Sequence[Window], events: Sequence[Event], timing: ScoringTiming
    ) -> None:
        with self._lock:
            self.start_indices += [w.start_index for w in windows]


def config_data(model_dir: Path, clip: Path, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": {"precision": "fp32", "name": str(model_dir), "torch_threads": 1},
        "sources": [
            {"type": "file", "id": "kitchen", "path": str(clip), "realtime": True, "loop": True}
        ],
        "window": {"seconds": 1.0, "hop_seconds": 0.5},
        # A cosine never reaches 1: nothing fires until a label with threshold 0 is added.
        "label_sets": [
            {"name": "home", "mode": "absolute", "threshold": 1.0, "labels": ["doorbell"]}
        ],
        "events": {"cooldown_seconds": 3600},
        "health": {"restart_backoff_seconds": 0.2},
        "log_level": "INFO",
    }
    data.update(extra)
    return data


def mqtt_data(broker: Broker, prefix: str, tmp_path: Path) -> dict[str, Any]:
    return {
        "host": broker.host,
        "port": broker.port,
        "topic_prefix": prefix,
        "device_id": "house",
        "reconnect_min_seconds": 0.2,
        "outbox": {"directory": str(tmp_path / "outbox")},
    }


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "kitchen.wav", 20.0, RATE_HZ, 1)


def answers(sub: Subscriber, prefix: str) -> list[dict[str, Any]]:
    return [json.loads(p) for p in sub.payloads(f"{prefix}/house/control/result")]


def test_a_label_added_over_mqtt_is_detected_without_a_gap_and_kept_across_a_restart(
    tmp_path: Path,
    tiny_clap_dir: Path,
    clip: Path,
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
    daemons: list[Running],
) -> None:
    prefix = f"ctl{uuid.uuid4().hex[:6]}"
    ha = f"ha{uuid.uuid4().hex[:6]}"
    config = Config.model_validate(
        config_data(
            tiny_clap_dir,
            clip,
            tmp_path,
            mqtt=mqtt_data(mosquitto, prefix, tmp_path),
            homeassistant={"discovery_prefix": ha},
            control={"enabled": True, "state_file": str(tmp_path / "state" / "control.json")},
        )
    )
    base = f"{prefix}/house/kitchen"
    sub = mqtt_subscriber(mosquitto, f"{prefix}/#")
    log = WindowLog()
    daemon = Daemon(config, notifier=SystemdNotifier(environ={}), observer=log)
    daemons.append(run := Running(daemon))
    wait_until(lambda: len(log.start_indices) >= 3, "windows scored", 60)
    # A new prompt (never embedded before): the text encoder runs while scoring goes on.
    kettle = f"kettle whistling {uuid.uuid4().hex[:4]}"
    slug = kettle.replace(" ", "_")
    command = {"command": "add_label", "id": "add-1", "label_set": "home", "name": kettle}
    mosquitto.publish(f"{prefix}/house/control", json.dumps({**command, "threshold": 0.0}))
    sub.wait_for(lambda _: answers(sub, prefix) != [], 60, "the answer")
    added = answers(sub, prefix)[0]
    assert added["ok"] and added["id"] == "add-1", added
    assert added["label_sets"]["home"]["labels"] == {"doorbell": 1.0, kettle: 0.0}
    sub.wait_for(
        lambda _: any(
            json.loads(p)["label"] == kettle for p in sub.payloads(f"{base}/home/detection")
        ),
        60,
        "a detection of the new label",
    )
    sub.wait_for(
        lambda _: sub.payloads(f"{base}/home/{slug}/state")[-1:] == ["ON"], 30, "its state ON"
    )
    # The running labels were scored through the swap: every hop, none skipped.
    indices = list(log.start_indices)
    steps = {b - a for a, b in itertools.pairwise(indices)}
    assert steps == {HOP_FRAMES}, sorted(steps)
    # Home Assistant sees the new binary_sensor without any YAML.
    discovery = json.loads(
        mosquitto.read_retained(f"{ha}/device/audio_monitor_house_kitchen/config") or "{}"
    )
    sensor = discovery["components"][f"home_{slug}"]
    assert sensor["platform"] == "binary_sensor" and sensor["state_topic"] == (
        f"{base}/home/{slug}/state"
    )
    # Bad commands: each gets its line, none changes the labels.
    for bad in (
        b"{oops",
        json.dumps({"command": "add_label", "label_set": "garage", "name": "x"}).encode(),
        json.dumps({"command": "set_threshold", "label_set": "home", "threshold": -1}).encode(),
    ):
        mosquitto.publish(f"{prefix}/house/control", bad.decode())
    sub.wait_for(lambda _: len(answers(sub, prefix)) >= 4, 30, "three refusals")
    refused = answers(sub, prefix)[1:]
    assert [r["ok"] for r in refused] == [False, False, False]
    assert all(r["label_sets"] == added["label_sets"] for r in refused)
    assert "no label set named 'garage'" in refused[1]["error"]
    run.stop()
    assert run.code == 0 and run.error is None

    # A restart keeps the change: the new label is scored from the first window.
    sub.clear()
    again = Daemon(config, notifier=SystemdNotifier(environ={}))
    daemons.append(second := Running(again))
    sub.wait_for(lambda _: sub.payloads(f"{base}/home/{slug}/state")[-1:] == ["ON"], 60, "ON again")
    assert again.pipeline is not None
    assert again.pipeline.worker.scorers("kitchen")[0].labels == ("doorbell", kettle)
    second.stop()


def test_sighup_applies_a_good_file_and_refuses_a_bad_one(
    tmp_path: Path,
    tiny_clap_dir: Path,
    clip: Path,
    run_monitor: Callable[[Path], subprocess.Popen[str]],
) -> None:
    data = config_data(
        tiny_clap_dir, clip, tmp_path, mqtt={"enabled": False}, output={"json_lines": True}
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = run_monitor(path)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = PipeLines(proc.stdout), PipeLines(proc.stderr)
    err.wait_for(lambda line: "ready:" in line, "readiness")

    def starts_of(label: str) -> Callable[[str], bool]:
        def match(line: str) -> bool:
            body = json.loads(line) if line.startswith("{") else {}
            return body.get("label") == label and body.get("event") == "start"

        return match

    # The edited file adds a label that always fires.
    data["label_sets"][0]["labels"].append({"name": "tap water", "threshold": 0.0})
    path.write_text(yaml.safe_dump(data))
    proc.send_signal(signal.SIGHUP)
    err.wait_for(lambda line: "config reloaded: 1 label set(s), 2 labels" in line, "the reload")
    out.wait_for(starts_of("tap water"), "a detection of the reloaded label")
    # A broken file: one line, and the running labels stay.
    path.write_text("label_sets:\n  - name: home\n    labels: []\n")
    proc.send_signal(signal.SIGHUP)
    refused = err.wait_for(lambda line: "config reload refused" in line, "the refusal")
    assert f"{path}: label_sets[0].labels: List should have at least 1 item" in refused
    assert proc.poll() is None
    assert err.count(lambda line: "Traceback" in line) == 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    # The label from the good file was still scored to the end: its event ends at shutdown.
    out.wait_for(
        lambda line: '"event":"end"' in line.replace(" ", "") and "tap water" in line,
        "its end at shutdown",
        10,
    )
