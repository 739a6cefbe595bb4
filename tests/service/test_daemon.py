"""End to end: `audio-monitor run` as a subprocess against a real broker and the tiny checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.errors import EXIT_UNAVAILABLE
from tests.support.audio import write_clip
from tests.support.broker import Broker, ReceivedMessage, Subscriber

PREFIX = "e2e"
DEVICE = "dev1"
BASE = f"{PREFIX}/{DEVICE}"


def make_config(
    tmp_path: Path, model_dir: Path, broker: Broker | None, source: dict[str, Any], **extra: Any
) -> Path:
    config: dict[str, Any] = {
        "model": {"precision": "fp32", "name": str(model_dir), "torch_threads": 1},
        "source": source,
        "window": {"seconds": 4.0, "hop_seconds": 2.0},
        "label_sets": [
            {
                "name": "pets",
                "threshold": 0.99,
                # threshold 0 always fires: the tiny model's random scores cannot miss it.
                "labels": [{"name": "dog barking", "threshold": 0.0}, "cat meowing"],
            },
            {"name": "home", "labels": ["door bell", "tap water"], "threshold": 0.0},
        ],
        "events": {"cooldown_seconds": 3600},
        "mqtt": {
            "enabled": broker is not None,
            "host": broker.host if broker else "localhost",
            "port": broker.port if broker else 1883,
            "topic_prefix": PREFIX,
            "device_id": DEVICE,
            "keepalive_seconds": 5,
            "reconnect_min_seconds": 0.2,
            "reconnect_max_seconds": 1.0,
            # Never the user's real state directory: leftovers would be re-sent later.
            "outbox": {"directory": str(tmp_path / "outbox")},
        },
        "output": {"json_lines": True},
        "log_level": "INFO",
    }
    config.update(extra)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def parse_utc(text: str) -> datetime:
    assert text.endswith("Z")
    return datetime.fromisoformat(text[:-1] + "+00:00")


def detections(sub: Subscriber, label_set: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.messages(f"{BASE}/{label_set}/detection")]


def check_detection_fields(payload: dict[str, Any], model_dir: Path, source_id: str) -> None:
    assert payload["device"] == DEVICE
    assert payload["source"] == source_id
    assert payload["model"] == str(model_dir)
    assert payload["event"] in ("start", "end")
    assert len(payload["id"]) == 36 and len(payload["event_id"]) == 36
    assert set(payload["scores"]) >= {payload["label"]}
    assert abs(sum(payload["scores"].values()) - 1.0) < 1e-4  # softmax over the set
    assert payload["scores"][payload["label"]] == payload["score"]
    assert payload["score"] >= payload["threshold"]
    start, end = parse_utc(payload["window_start"]), parse_utc(payload["window_end"])
    assert 0 < (end - start).total_seconds() <= 10.0


def states(messages: list[ReceivedMessage], topic: str) -> list[str]:
    return [m.payload for m in messages if m.topic == topic]


@pytest.mark.slow
def test_file_source_end_to_end_exits_0_when_done(
    tmp_path: Path,
    tiny_clap_dir: Path,
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
    run_monitor: Callable[..., subprocess.Popen[str]],
) -> None:
    clip = write_clip(tmp_path / "clip.wav", seconds=11.0)
    source = {"type": "file", "id": "replay", "path": str(clip), "realtime": False}
    config = make_config(tmp_path, tiny_clap_dir, mosquitto, source)
    sub = mqtt_subscriber(mosquitto, f"{PREFIX}/#")
    proc = run_monitor(config)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr

    sub.wait_for(
        lambda ms: any(m.topic == f"{BASE}/status" and m.payload == "offline" for m in ms),
        what="offline status",
    )
    status = states(sub.messages(), f"{BASE}/status")
    assert status[0] == "online" and status[-1] == "offline"

    pets = detections(sub, "pets")
    # One event for the always-firing label over the whole clip: a start and, at the end, an end.
    assert [(p["event"], p["label"]) for p in pets] == [
        ("start", "dog barking"),
        ("end", "dog barking"),
    ]
    start, end = pets
    assert start["event_id"] == end["event_id"] and start["id"] != end["id"]
    for p in pets:
        check_detection_fields(p, tiny_clap_dir, "replay")
    # Windows of 4 s every 2 s over 11 s: ends at 4, 6, 8, 10 s and a final one at 11 s.
    assert end["detections"] == 5
    assert (parse_utc(start["window_end"]) - parse_utc(start["window_start"])).total_seconds() == (
        pytest.approx(4.0, abs=0.01)
    )
    assert (parse_utc(end["ended_at"]) - parse_utc(start["window_start"])).total_seconds() == (
        pytest.approx(11.0, abs=0.01)
    )
    home = detections(sub, "home")
    assert sorted((p["event"], p["label"]) for p in home) == [
        ("end", "door bell"),
        ("end", "tap water"),
        ("start", "door bell"),
        ("start", "tap water"),
    ]

    messages = sub.messages()
    assert states(messages, f"{BASE}/pets/dog_barking/state") == ["OFF", "ON", "OFF"]
    assert states(messages, f"{BASE}/pets/cat_meowing/state")[0] == "OFF"
    # The retained values a late subscriber sees.
    late = mqtt_subscriber(mosquitto, f"{PREFIX}/#")
    late.wait_for(lambda ms: len([m for m in ms if m.retain]) >= 5, what="retained")
    retained = {m.topic: m.payload for m in late.messages() if m.retain}
    assert retained[f"{BASE}/status"] == "offline"
    assert retained[f"{BASE}/pets/dog_barking/state"] == "OFF"
    assert retained[f"{BASE}/home/door_bell/state"] == "OFF"

    # JSON lines on stdout carry the same events as MQTT.
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert sorted(p["id"] for p in lines) == sorted(p["id"] for p in pets + home)
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_sigterm_stops_cleanly_within_5_seconds(
    tmp_path: Path,
    tiny_clap_dir: Path,
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
    run_monitor: Callable[..., subprocess.Popen[str]],
) -> None:
    clip = write_clip(tmp_path / "clip.flac", seconds=3.0, rate_hz=16000, channels=1)
    source = {"type": "file", "path": str(clip), "realtime": True, "loop": True}
    config = make_config(tmp_path, tiny_clap_dir, mosquitto, source)
    sub = mqtt_subscriber(mosquitto, f"{PREFIX}/#")
    proc = run_monitor(config)
    sub.wait_for(
        lambda ms: states(ms, f"{BASE}/pets/dog_barking/state")[-1:] == ["ON"],
        timeout_seconds=60,
        what="first detection",
    )
    assert states(sub.messages(), f"{BASE}/status") == ["online"]
    assert [p["event"] for p in detections(sub, "pets")] == ["start"]

    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 5.0
    assert proc.returncode == 0, stderr
    messages = sub.wait_for(
        lambda ms: any(m.topic == f"{BASE}/status" and m.payload == "offline" for m in ms),
        what="offline",
    )
    assert states(messages, f"{BASE}/pets/dog_barking/state")[-1] == "OFF"
    ends = [p for p in detections(sub, "pets") if p["event"] == "end"]
    assert [p["label"] for p in ends] == ["dog barking"]
    assert "received SIGTERM" in stderr


@pytest.mark.slow
def test_microphone_source_end_to_end(
    tmp_path: Path,
    tiny_clap_dir: Path,
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
    run_monitor: Callable[..., subprocess.Popen[str]],
    pulse_null_sink: Any,
) -> None:
    source = {"type": "microphone", "id": "room", "device": "pulse", "sample_rate_hz": 44100}
    config = make_config(tmp_path, tiny_clap_dir, mosquitto, source)
    sub = mqtt_subscriber(mosquitto, f"{PREFIX}/#")
    tone = write_clip(tmp_path / "tone.wav", seconds=8.0, rate_hz=48000, channels=1)
    player = pulse_null_sink.play(tone)
    proc = run_monitor(config, env=pulse_null_sink.env)
    try:
        sub.wait_for(
            lambda ms: any(m.topic == f"{BASE}/pets/detection" for m in ms),
            timeout_seconds=60,
            what="detection from the microphone",
        )
    finally:
        player.kill()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    sub.wait_for(
        lambda ms: any(m.topic == f"{BASE}/status" and m.payload == "offline" for m in ms),
        what="offline",
    )
    start = detections(sub, "pets")[0]
    check_detection_fields(start, tiny_clap_dir, "room")
    # A live window's time is "just now", derived from the capture clock.
    age = time.time() - parse_utc(start["window_end"]).timestamp()
    assert 0 <= age < 60
    assert "44100 Hz" in stderr


@pytest.mark.slow
def test_unusable_model_exits_75_in_one_line(
    tmp_path: Path, run_monitor: Callable[..., subprocess.Popen[str]]
) -> None:
    clip = write_clip(tmp_path / "clip.wav", seconds=1.0)
    config = make_config(
        tmp_path, tmp_path / "no-such-model-dir", None, {"type": "file", "path": str(clip)}
    )
    proc = run_monitor(config)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_UNAVAILABLE
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "no-such-model-dir" in errors[0], stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_unusable_audio_file_exits_75_in_one_line(
    kind: str,
    tmp_path: Path,
    tiny_clap_dir: Path,
    run_monitor: Callable[..., subprocess.Popen[str]],
) -> None:
    clip = tmp_path / "clip.wav"
    if kind == "corrupt":
        clip.write_bytes(b"RIFF....WAVEfmt garbage" * 10)
    config = make_config(tmp_path, tiny_clap_dir, None, {"type": "file", "path": str(clip)})
    proc = run_monitor(config)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_UNAVAILABLE, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("audio-monitor: error: audio file") and str(clip) in last
    assert "Traceback" not in stderr
