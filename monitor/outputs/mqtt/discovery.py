"""Home Assistant MQTT discovery: one device per source and its entities; pure functions."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitor import __version__
from monitor.config import LabelSetConfig
from monitor.outputs.mqtt.payloads import (
    STATE_OFF,
    STATE_ON,
    STATUS_OFFLINE,
    STATUS_ONLINE,
    Message,
    Topics,
)

SUPPORT_URL = "https://github.com/audio-monitor/audio-monitor"
BIRTH_ONLINE = "online"  # what Home Assistant publishes on <prefix>/status when it starts
_ID_RE = re.compile(r"[^a-zA-Z0-9_-]+")
# An event fires only for a start: an end renders {} and Home Assistant ignores it.
EVENT_VALUE_TEMPLATE = "{% if value_json.event == 'start' %}{{ value }}{% else %}{}{% endif %}"


def discovery_id(*parts: str) -> str:
    """Parts joined by '_', with anything outside [a-zA-Z0-9_-] turned into '_'."""
    return _ID_RE.sub("_", "_".join(parts))


@dataclass(frozen=True)
class DeviceInfo:
    """What the discovery payloads say about this monitor."""

    discovery_prefix: str
    device_id: str  # mqtt.device_id
    model: str  # the checkpoint (model.name)
    top_labels: bool = False  # the scores topic is on: a top label and score sensor per set

    def node_id(self, source_id: str) -> str:
        """The discovery node of one source: stable across restarts, unique per monitor."""
        return discovery_id("audio_monitor", self.device_id, source_id)

    @property
    def node_prefix(self) -> str:
        """Every node of this monitor starts with this (to find ones of removed sources)."""
        return discovery_id("audio_monitor", self.device_id) + "_"

    def config_topic(self, node_id: str) -> str:
        return f"{self.discovery_prefix}/device/{node_id}/config"

    @property
    def config_wildcard(self) -> str:
        return f"{self.discovery_prefix}/device/+/config"

    @property
    def birth_topic(self) -> str:
        return f"{self.discovery_prefix}/status"


def _binary_sensors(
    node: str, source_id: str, label_set: LabelSetConfig, topics: Topics
) -> dict[str, dict[str, Any]]:
    return {
        discovery_id(label_set.name, label.slug): {
            "platform": "binary_sensor",
            "unique_id": discovery_id(node, label_set.name, label.slug),
            "name": label.name,
            "state_topic": topics.state(source_id, label_set.name, label.name),
            "payload_on": STATE_ON,
            "payload_off": STATE_OFF,
            "device_class": label.device_class,
        }
        for label in label_set.labels
    }


def _event(node: str, source_id: str, label_set: LabelSetConfig, topics: Topics) -> dict[str, Any]:
    return {
        "platform": "event",
        "unique_id": discovery_id(node, label_set.name, "event"),
        "name": f"{label_set.name} sound",
        "state_topic": topics.detection(source_id, label_set.name),
        "event_types": [label.slug for label in label_set.labels],
        "value_template": EVENT_VALUE_TEMPLATE,
    }


def _diagnostics(node: str, source_id: str, topics: Topics) -> dict[str, dict[str, Any]]:
    health = topics.source_health(source_id)
    common = {"platform": "sensor", "state_topic": health, "entity_category": "diagnostic"}
    return {
        "health": {
            **common,
            "unique_id": discovery_id(node, "health"),
            "name": "Health",
            "value_template": "{{ value_json.state }}",
            "json_attributes_topic": health,
        },
        "windows_scored": {
            **common,
            "unique_id": discovery_id(node, "windows_scored"),
            "name": "Windows scored",
            "value_template": "{{ value_json.windows_scored }}",
            "state_class": "total_increasing",
        },
    }


def components(
    device: DeviceInfo, source_id: str, label_sets: Sequence[LabelSetConfig], topics: Topics
) -> dict[str, dict[str, Any]]:
    """Component id -> its config, for one source's device."""
    node = device.node_id(source_id)
    out: dict[str, dict[str, Any]] = {}
    for label_set in label_sets:
        out.update(_binary_sensors(node, source_id, label_set, topics))
        out[discovery_id(label_set.name, "event")] = _event(node, source_id, label_set, topics)
    out.update(_diagnostics(node, source_id, topics))
    if device.top_labels:
        for label_set in label_sets:
            out.update(_top_label(node, source_id, label_set.name, topics))
    return out


def _top_label(node: str, source_id: str, set_name: str, topics: Topics) -> dict[str, Any]:
    first = f"value_json.sets['{set_name}'][0]"
    common = {
        "platform": "sensor",
        "state_topic": topics.scores(source_id),
        "entity_category": "diagnostic",
    }
    return {
        discovery_id(set_name, "top_label"): {
            **common,
            "unique_id": discovery_id(node, set_name, "top_label"),
            "name": f"{set_name} top label",
            "value_template": "{{ " + first + ".label }}",
        },
        discovery_id(set_name, "top_score"): {
            **common,
            "unique_id": discovery_id(node, set_name, "top_score"),
            "name": f"{set_name} top score",
            "value_template": "{{ " + first + ".score }}",
            "state_class": "measurement",
        },
    }


def device_payload(
    device: DeviceInfo,
    source_id: str,
    comps: Mapping[str, Mapping[str, Any]],
    topics: Topics,
) -> dict[str, Any]:
    """The device-based discovery payload of one source (full key names)."""
    return {
        "device": {
            "identifiers": [device.node_id(source_id)],
            "name": f"{device.device_id} {source_id}",
            "manufacturer": "audio-monitor",
            "model": device.model,
            "sw_version": __version__,
        },
        "origin": {"name": "audio-monitor", "sw_version": __version__, "support_url": SUPPORT_URL},
        "availability": [
            {
                "topic": topics.status,
                "payload_available": STATUS_ONLINE,
                "payload_not_available": STATUS_OFFLINE,
            }
        ],
        "qos": 1,
        "components": dict(comps),
    }


def discovery_messages(
    device: DeviceInfo,
    label_sets_of: Mapping[str, Sequence[LabelSetConfig]],
    topics: Topics,
    removed: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Message]:
    """One retained device config per source. `removed`: node id -> {component id: platform}
    of components an earlier run published and this config no longer has; each is sent with
    its platform only, which is how Home Assistant removes a single component."""
    messages = []
    for source_id, label_sets in label_sets_of.items():
        comps: dict[str, dict[str, Any]] = {
            cid: {"platform": platform}
            for cid, platform in (removed or {}).get(device.node_id(source_id), {}).items()
        }
        comps.update(components(device, source_id, label_sets, topics))
        body = json.dumps(device_payload(device, source_id, comps, topics), separators=(",", ":"))
        messages.append(Message(device.config_topic(device.node_id(source_id)), body, 1, True))
    return messages


def published_components(payload: bytes) -> dict[str, str] | None:
    """Component id -> platform of a retained device config that still has an entity (the
    ones reduced to their platform are already removed); None when it is not one."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    comps = body.get("components") if isinstance(body, dict) else None
    if not isinstance(comps, dict):
        return None
    return {
        str(cid): str(c["platform"])
        for cid, c in comps.items()
        if isinstance(c, dict) and "platform" in c and len(c) > 1
    }
