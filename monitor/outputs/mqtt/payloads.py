"""MQTT topics and the JSON payloads of events; pure functions, no network."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from monitor.config import LabelSetConfig, MqttConfig, slugify
from monitor.frames import Event
from monitor.outputs.sink import HealthReport

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
STATE_ON = "ON"
STATE_OFF = "OFF"


@dataclass(frozen=True)
class Message:
    """One MQTT message to publish."""

    topic: str
    payload: str
    qos: int
    retain: bool


@dataclass(frozen=True)
class Topics:
    """The topic layout under `<prefix>/<device_id>/`."""

    prefix: str
    device_id: str

    @classmethod
    def from_config(cls, cfg: MqttConfig) -> Topics:
        return cls(cfg.topic_prefix, cfg.device_id)

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device_id}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def health(self) -> str:
        return f"{self.base}/health"

    def detection(self, label_set: str) -> str:
        return f"{self.base}/{label_set}/detection"

    def state(self, label_set: str, label: str) -> str:
        return f"{self.base}/{label_set}/{slugify(label)}/state"


def iso_utc(moment: datetime) -> str:
    """ISO-8601 in UTC with millisecond precision and a 'Z' suffix."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_payload(event: Event, device_id: str) -> dict[str, Any]:
    """The JSON object published for an event start or end."""
    d = event.detection
    payload: dict[str, Any] = {
        "event": event.kind,
        "id": d.id,
        "event_id": event.event_id,
        "device": device_id,
        "source": d.source_id,
        "label_set": d.label_set,
        "label": d.label,
        "score": round(d.score, 6),
        "threshold": d.threshold,
        "scores": {label: round(score, 6) for label, score in d.scores.items()},
        "window_start": iso_utc(d.window_start),
        "window_end": iso_utc(d.window_end),
        "started_at": iso_utc(event.started_at),
        "model": d.model_id,
    }
    if event.kind == "end":
        assert event.ended_at is not None
        payload["ended_at"] = iso_utc(event.ended_at)
        payload["detections"] = event.detection_count
    return payload


def event_messages(event: Event, topics: Topics, qos: int) -> list[Message]:
    """An event's detection message and the retained ON/OFF state of its label."""
    d = event.detection
    body = json.dumps(event_payload(event, topics.device_id), separators=(",", ":"))
    state = STATE_ON if event.kind == "start" else STATE_OFF
    return [
        Message(topics.detection(d.label_set), body, qos, retain=False),
        Message(topics.state(d.label_set, d.label), state, qos, retain=True),
    ]


def initial_state_messages(
    label_sets: list[LabelSetConfig], topics: Topics, qos: int
) -> list[Message]:
    """Retained OFF for every label at start-up: clears an ON left by a crashed run."""
    return [
        Message(topics.state(s.name, label.name), STATE_OFF, qos, retain=True)
        for s in label_sets
        for label in s.labels
    ]


def health_message(report: HealthReport, topics: Topics) -> Message:
    """The retained JSON on <prefix>/<device>/health."""
    body = {
        "state": report.state,
        "detail": report.detail,
        "source": report.source_id,
        "time": iso_utc(report.time),
        **report.counters,
    }
    return Message(topics.health, json.dumps(body, separators=(",", ":")), qos=1, retain=True)
