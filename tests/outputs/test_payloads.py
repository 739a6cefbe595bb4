"""Topics and JSON payloads as documented in the README."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone

from monitor.config import LabelSetConfig
from monitor.frames import Detection, Event
from monitor.outputs.mqtt.payloads import (
    Topics,
    event_messages,
    event_payload,
    health_messages,
    initial_state_messages,
    iso_utc,
)
from monitor.outputs.sink import HealthReport, SourceHealth

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
    assert topics.detection("mic", "safety") == "home/audio/kitchen/safety/detection"
    assert (
        topics.state("mic", "safety", "Glass breaking!")
        == "home/audio/kitchen/safety/glass_breaking/state"
    )


def test_topics_per_source() -> None:
    topics = Topics("home/audio", "house", per_source=True)
    assert topics.status == "home/audio/house/status"  # availability: one per monitor
    assert topics.health == "home/audio/house/health"
    assert topics.source_health("porch") == "home/audio/house/porch/health"
    assert topics.detection("porch", "pets") == "home/audio/house/porch/pets/detection"
    assert (
        topics.state("porch", "pets", "Dog barking")
        == "home/audio/house/porch/pets/dog_barking/state"
    )


def test_two_sources_hearing_one_label_have_two_states() -> None:
    topics = Topics("am", "dev", per_source=True)
    kitchen = Event("start", "e1", detection(), started_at=T)
    porch_detection = Detection(**{**vars(detection()), "source_id": "porch"})
    porch = Event("start", "e2", porch_detection, started_at=T)
    (k_det, k_state), (p_det, p_state) = (event_messages(e, topics, 1) for e in (kitchen, porch))
    assert (k_det.topic, k_state.topic) == (
        "am/dev/mic/safety/detection",
        "am/dev/mic/safety/glass_breaking/state",
    )
    assert (p_det.topic, p_state.topic) == (
        "am/dev/porch/safety/detection",
        "am/dev/porch/safety/glass_breaking/state",
    )
    assert json.loads(p_det.payload)["source"] == "porch"


def test_health_per_source_and_for_the_monitor() -> None:
    report = HealthReport(
        "degraded",
        "porch: no audio",
        T,
        {"windows_scored": 9, "outbox_pending": 0},
        (
            SourceHealth("kitchen", "ok", "", {"windows_scored": 9}),
            SourceHealth("porch", "degraded", "no audio", {"windows_scored": 0}),
        ),
    )
    monitor, kitchen, porch = health_messages(report, Topics("am", "dev", per_source=True))
    assert all(m.retain and m.qos == 1 for m in (monitor, kitchen, porch))
    assert monitor.topic == "am/dev/health"
    assert json.loads(monitor.payload) == {
        "state": "degraded",
        "detail": "porch: no audio",
        "time": "2026-03-01T12:00:05.250Z",
        "windows_scored": 9,
        "outbox_pending": 0,
        "sources": {"kitchen": "ok", "porch": "degraded"},
    }
    assert porch.topic == "am/dev/porch/health"
    assert json.loads(porch.payload) == {
        "state": "degraded",
        "detail": "no audio",
        "source": "porch",
        "time": "2026-03-01T12:00:05.250Z",
        "windows_scored": 0,
    }
    assert kitchen.topic == "am/dev/kitchen/health"


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
        "event_type": "glass_breaking",
    }


def test_end_message_has_span_and_count() -> None:
    event = Event("end", "e1", detection(), started_at=T, ended_at=T, detection_count=4)
    det, state = event_messages(event, Topics("am", "dev"), qos=2)
    body = json.loads(det.payload)
    assert body["event"] == "end" and body["detections"] == 4 and body["ended_at"] == iso_utc(T)
    assert "event_type" not in body  # an end must not fire Home Assistant's event entity
    assert state.payload == "OFF" and state.qos == 2


def test_initial_states_are_off_and_retained() -> None:
    sets = [
        LabelSetConfig(name="a", labels=["x", "y"]),
        LabelSetConfig(name="b", labels=["z", "w"]),
    ]
    msgs = initial_state_messages({"mic": sets}, Topics("p", "d"), qos=1)
    assert [m.topic for m in msgs] == [
        "p/d/a/x/state",
        "p/d/a/y/state",
        "p/d/b/z/state",
        "p/d/b/w/state",
    ]
    assert all(m.payload == "OFF" and m.retain for m in msgs)


def test_health_is_retained_json_with_the_counters_in_order() -> None:
    report = HealthReport(
        "degraded",
        "no audio",
        T,
        {"windows_scored": 7, "lost_frames": 0},
        (SourceHealth("mic", "degraded", "no audio", {"windows_scored": 7}),),
    )
    (msg,) = health_messages(report, Topics("am", "dev"))
    assert (msg.topic, msg.qos, msg.retain) == ("am/dev/health", 1, True)
    assert msg.payload == (
        '{"state":"degraded","detail":"no audio","source":"mic",'
        '"time":"2026-03-01T12:00:05.250Z","windows_scored":7,"lost_frames":0}'
    )


def test_an_end_names_its_clip_when_it_has_one() -> None:
    end = Event("end", "e1", detection(), started_at=T, ended_at=T, clip="mic/2026-03-01/a.flac")
    assert event_payload(end, "dev")["clip"] == "mic/2026-03-01/a.flac"
    assert "clip" not in event_payload(replace(end, clip=None), "dev")
