"""MQTT topics and the JSON payloads of events; pure functions, no network."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from monitor.config import LabelSetConfig, MqttConfig, slugify
from monitor.frames import ControlResult, Event, Scores
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
    """The topic layout under `<prefix>/<device_id>/`: with a level per source, or flat (the
    layout of one-source configs, kept so their subscribers need no change)."""

    prefix: str
    device_id: str
    per_source: bool = False

    @classmethod
    def from_config(cls, cfg: MqttConfig, *, per_source: bool) -> Topics:
        return cls(cfg.topic_prefix, cfg.device_id, per_source)

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device_id}"

    @property
    def status(self) -> str:
        """Availability: one per monitor, whatever the layout."""
        return f"{self.base}/status"

    @property
    def health(self) -> str:
        """The monitor's health (the only health topic of the flat layout)."""
        return f"{self.base}/health"

    @property
    def control(self) -> str:
        """Where control commands arrive (JSON); one per monitor, whatever the layout."""
        return f"{self.base}/control"

    @property
    def control_result(self) -> str:
        return f"{self.base}/control/result"

    def source_base(self, source_id: str) -> str:
        return f"{self.base}/{source_id}" if self.per_source else self.base

    def source_health(self, source_id: str) -> str:
        """Where this source's health is: its own topic, or the monitor's in the flat layout."""
        return f"{self.source_base(source_id)}/health"

    def scores(self, source_id: str) -> str:
        return f"{self.source_base(source_id)}/scores"

    def detection(self, source_id: str, label_set: str) -> str:
        return f"{self.source_base(source_id)}/{label_set}/detection"

    def state(self, source_id: str, label_set: str, label: str) -> str:
        return f"{self.source_base(source_id)}/{label_set}/{slugify(label)}/state"


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
    if event.kind == "start":
        # Home Assistant's event entity fires on this (its event_types are the label slugs).
        payload["event_type"] = slugify(d.label)
    if event.kind == "end":
        assert event.ended_at is not None
        payload["ended_at"] = iso_utc(event.ended_at)
        payload["detections"] = event.detection_count
        if event.clip is not None:
            payload["clip"] = event.clip  # relative to clips.directory; complete after post-roll
    return payload


def event_messages(event: Event, topics: Topics, qos: int) -> list[Message]:
    """An event's detection message and the retained ON/OFF state of its label."""
    d = event.detection
    body = json.dumps(event_payload(event, topics.device_id), separators=(",", ":"))
    state = STATE_ON if event.kind == "start" else STATE_OFF
    return [
        Message(topics.detection(d.source_id, d.label_set), body, qos, retain=False),
        Message(topics.state(d.source_id, d.label_set, d.label), state, qos, retain=True),
    ]


def initial_state_messages(
    label_sets_of: Mapping[str, Sequence[LabelSetConfig]], topics: Topics, qos: int
) -> list[Message]:
    """Retained OFF for every label of every source at start-up: clears an ON left by a
    crashed run. `label_sets_of`: source id -> the sets that source is scored against."""
    return [
        Message(topics.state(source_id, s.name, label.name), STATE_OFF, qos, retain=True)
        for source_id, label_sets in label_sets_of.items()
        for s in label_sets
        for label in s.labels
    ]


def _json(body: Mapping[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


def health_messages(report: HealthReport, topics: Topics) -> list[Message]:
    """The retained health JSON: flat, one message on <base>/health in the shape of one
    source; per source, the monitor's on <base>/health (with each source's state) and each
    source's own on <base>/<source>/health."""
    time = iso_utc(report.time)
    if not topics.per_source:
        # One source: its state and the monitor's counters (they are the same source's).
        source = report.sources[0].source_id if report.sources else ""
        body = {"state": report.state, "detail": report.detail, "source": source, "time": time}
        return [Message(topics.health, _json({**body, **report.counters}), qos=1, retain=True)]
    monitor = {
        "state": report.state,
        "detail": report.detail,
        "time": time,
        **report.counters,
        "sources": {s.source_id: s.state for s in report.sources},
    }
    messages = [Message(topics.health, _json(monitor), qos=1, retain=True)]
    for s in report.sources:
        body = {"state": s.state, "detail": s.detail, "source": s.source_id, "time": time}
        messages.append(
            Message(
                topics.source_health(s.source_id),
                _json({**body, **s.counters}),
                qos=1,
                retain=True,
            )
        )
    return messages


def scores_message(scores: Sequence[Scores], topics: Topics, top_k: int) -> Message:
    """The top `top_k` labels of each set for one window (QoS 0, not retained: a view of
    what is being heard now, worthless later)."""
    window = scores[0].window
    body = {
        "source": window.source_id,
        "window_start": iso_utc(window.start_time),
        "window_end": iso_utc(window.end_time),
        "sets": {
            s.label_set: [
                {"label": label, "score": round(score, 6)} for label, score in s.top(top_k)
            ]
            for s in scores
        },
    }
    return Message(topics.scores(window.source_id), _json(body), qos=0, retain=False)


def control_result_message(result: ControlResult, topics: Topics) -> Message:
    """The answer to one command (not retained): ok or the error, and the labels after it."""
    body: dict[str, Any] = {
        "command": result.command,
        "ok": result.ok,
        "detail" if result.ok else "error": result.detail,
    }
    if result.request_id is not None:
        body["id"] = result.request_id
    body["time"] = iso_utc(result.time)
    body["profile"] = result.profile
    body["label_sets"] = {
        view.name: {"enabled": view.enabled, "labels": dict(view.thresholds)}
        for view in result.label_sets
    }
    return Message(topics.control_result, _json(body), 1, retain=False)
