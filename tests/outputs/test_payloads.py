"""Topics and JSON payloads as documented in the README."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from monitor.config import LabelSetConfig
from monitor.frames import Detection, Event
from monitor.outputs.mqtt.payloads import (
    Topics,
    event_messages,
    health_message,
    initial_state_messages,
    iso_utc,
)
from monitor.outputs.sink import HealthReport

T = datetime(2026, 3, 1, 12, 0, 5, 250000, tzinfo=timezone.utc)


def detection() -> Detection:
    return Detection(
        id="d1",
        source_id="mic",
        label_set="safety",
        label="glass breaking",
        score=0.8123456789,
        threshold=0.5,
        scores={"glass breaking": 0.8123456789, "silence": 0.1876543211},
        window_start=T,
        window_end=T,
        model_id="laion/clap-htsat-unfused",
    )


def test_topics() -> None:
    topics = Topics("home/audio", "kitchen")
    assert topics.status == "home/audio/kitchen/status"
    assert topics.detection("safety") == "home/audio/kitchen/safety/detection"
    assert (
        topics.state("safety", "Glass breaking!")
        == "home/audio/kitchen/safety/glass_breaking/state"
    )


def test_start_message_and_state() -> None:
    event = Event("start", "e1", detection(), started_at=T)
    det, state = event_messages(event, Topics("am", "dev"), qos=1)
    assert (det.topic, det.retain, det.qos) == ("am/dev/safety/detection", False, 1)
    assert (state.topic, state.payload, state.retain) == (
        "am/dev/safety/glass_breaking/state",
        "ON",
        True,
    )
    body = json.loads(det.payload)
    assert body == {
        "event": "start",
        "id": "d1",
        "event_id": "e1",
        "device": "dev",
        "source": "mic",
        "label_set": "safety",
        "label": "glass breaking",
        "score": 0.812346,
        "threshold": 0.5,
        "scores": {"glass breaking": 0.812346, "silence": 0.187654},
        "window_start": "2026-03-01T12:00:05.250Z",
        "window_end": "2026-03-01T12:00:05.250Z",
        "started_at": "2026-03-01T12:00:05.250Z",
        "model": "laion/clap-htsat-unfused",
    }


def test_end_message_has_span_and_count() -> None:
    event = Event("end", "e1", detection(), started_at=T, ended_at=T, detection_count=4)
    det, state = event_messages(event, Topics("am", "dev"), qos=2)
    body = json.loads(det.payload)
    assert body["event"] == "end" and body["detections"] == 4 and body["ended_at"] == iso_utc(T)
    assert state.payload == "OFF" and state.qos == 2


def test_initial_states_are_off_and_retained() -> None:
    sets = [
        LabelSetConfig(name="a", labels=["x", "y"]),
        LabelSetConfig(name="b", labels=["z", "w"]),
    ]
    msgs = initial_state_messages(sets, Topics("p", "d"), qos=1)
    assert [m.topic for m in msgs] == [
        "p/d/a/x/state",
        "p/d/a/y/state",
        "p/d/b/z/state",
        "p/d/b/w/state",
    ]
    assert all(m.payload == "OFF" and m.retain for m in msgs)


def test_health_is_retained_json_with_the_counters_in_order() -> None:
    report = HealthReport("degraded", "no audio", "mic", T, {"windows_scored": 7, "lost_frames": 0})
    msg = health_message(report, Topics("am", "dev"))
    assert (msg.topic, msg.qos, msg.retain) == ("am/dev/health", 1, True)
    assert msg.payload == (
        '{"state":"degraded","detail":"no audio","source":"mic",'
        '"time":"2026-03-01T12:00:05.250Z","windows_scored":7,"lost_frames":0}'
    )
