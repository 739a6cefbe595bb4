"""Home Assistant discovery: the payloads, and their life on a real broker (birth, removals)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

from monitor.config import LabelSetConfig
from monitor.outputs.mqtt.discovery import DeviceInfo, discovery_messages
from monitor.outputs.mqtt.payloads import Topics
from monitor.outputs.mqtt.sink import MqttSink
from tests.support.broker import Broker, Subscriber
from tests.support.mqtt import make_config
from tests.support.waiting import wait_until

SETS = [
    LabelSetConfig(
        name="safety",
        labels=[{"name": "Smoke alarm!", "device_class": "smoke"}, "glass breaking"],
    ),
    LabelSetConfig(name="pets", labels=["dog barking", "cat"]),
]
ID_RE = re.compile(r"^[a-zA-Z0-9_-]+$")


def payloads(device: DeviceInfo, label_sets_of: dict[str, list[LabelSetConfig]]) -> list[Any]:
    topics = Topics("am", device.device_id, per_source=True)
    return [json.loads(m.payload) for m in discovery_messages(device, label_sets_of, topics)]


def test_one_device_per_source_with_every_required_key() -> None:
    device = DeviceInfo("homeassistant", "house", "laion/clap-htsat-unfused")
    topics = Topics("am", "house", per_source=True)
    messages = discovery_messages(device, {"kitchen": SETS, "porch": SETS[1:]}, topics)
    assert [m.topic for m in messages] == [
        "homeassistant/device/audio_monitor_house_kitchen/config",
        "homeassistant/device/audio_monitor_house_porch/config",
    ]
    assert all(m.retain and m.qos == 1 for m in messages)
    kitchen = json.loads(messages[0].payload)
    assert kitchen["device"] == {
        "identifiers": ["audio_monitor_house_kitchen"],
        "name": "house kitchen",
        "manufacturer": "audio-monitor",
        "model": "laion/clap-htsat-unfused",
        "sw_version": kitchen["origin"]["sw_version"],
    }
    assert set(kitchen["origin"]) == {"name", "sw_version", "support_url"}
    assert kitchen["availability"] == [
        {
            "topic": "am/house/status",
            "payload_available": "online",
            "payload_not_available": "offline",
        }
    ]
    comps = kitchen["components"]
    for cid, comp in comps.items():
        assert ID_RE.match(cid) and ID_RE.match(comp["unique_id"]), cid
        assert comp["platform"] in ("binary_sensor", "event", "sensor")
    smoke = comps["safety_smoke_alarm"]
    assert smoke["platform"] == "binary_sensor" and smoke["device_class"] == "smoke"
    assert smoke["state_topic"] == "am/house/kitchen/safety/smoke_alarm/state"
    assert (smoke["payload_on"], smoke["payload_off"]) == ("ON", "OFF")
    assert comps["pets_dog_barking"]["device_class"] == "sound"  # the default
    event = comps["safety_event"]
    assert event["platform"] == "event"
    assert event["state_topic"] == "am/house/kitchen/safety/detection"
    assert event["event_types"] == ["smoke_alarm", "glass_breaking"]
    assert comps["health"]["state_topic"] == "am/house/kitchen/health"
    assert comps["health"]["entity_category"] == "diagnostic"
    assert comps["windows_scored"]["value_template"] == "{{ value_json.windows_scored }}"
    # The porch is scored against pets only: its device has no safety entity.
    porch = json.loads(messages[1].payload)["components"]
    assert "safety_event" not in porch and "pets_event" in porch
    # Unique ids do not depend on anything but the config: stable across restarts.
    assert payloads(device, {"kitchen": SETS}) == payloads(device, {"kitchen": SETS})
    everything = [
        c["unique_id"]
        for p in payloads(device, {"a": SETS, "b": SETS})
        for c in p["components"].values()
    ]
    assert len(everything) == len(set(everything))


def sink_for(
    broker: Broker, prefix: str, label_sets_of: dict[str, list[LabelSetConfig]]
) -> MqttSink:
    cfg = make_config(broker, device_id="house", topic_prefix="am", outbox={"enabled": False})
    return MqttSink(
        cfg, label_sets_of, per_source=True, discovery=DeviceInfo(prefix, "house", "tiny")
    )


def config_of(broker: Broker, prefix: str, source: str) -> dict[str, Any] | None:
    text = broker.read_retained(f"{prefix}/device/audio_monitor_house_{source}/config")
    return json.loads(text) if text else None


def test_discovery_is_retained_republished_on_birth_and_cleans_up(
    mosquitto: Broker, mqtt_subscriber: Callable[..., Subscriber]
) -> None:
    prefix = f"ha{uuid.uuid4().hex[:8]}"
    first = sink_for(mosquitto, prefix, {"kitchen": SETS, "porch": SETS})
    first.start()
    wait_until(lambda: config_of(mosquitto, prefix, "porch") is not None, "discovery", 10)
    kitchen = config_of(mosquitto, prefix, "kitchen")
    assert kitchen is not None and "safety_glass_breaking" in kitchen["components"]
    # Home Assistant restarts: its birth message makes the monitor publish again.
    sub = mqtt_subscriber(mosquitto, f"{prefix}/device/+/config")
    sub.wait_for(lambda ms: len(ms) >= 2, what="the retained configs")
    before = len(sub.messages())
    mosquitto.publish(f"{prefix}/status", "online")
    sub.wait_for(lambda ms: len(ms) >= before + 2, timeout_seconds=15, what="a republish")
    seen = [m.topic for m in sub.messages()[before:]]
    assert sorted(seen) == sorted(
        f"{prefix}/device/audio_monitor_house_{s}/config" for s in ("kitchen", "porch")
    )
    first.stop(2.0)
    # The next run has no glass breaking and no porch: neither may come back as a ghost.
    smaller = [LabelSetConfig(name="safety", labels=["Smoke alarm!", "kettle"]), SETS[1]]
    second = sink_for(mosquitto, prefix, {"kitchen": smaller})
    second.start()
    try:
        wait_until(
            lambda: (
                (c := config_of(mosquitto, prefix, "kitchen")) is not None
                and c["components"].get("safety_glass_breaking") == {"platform": "binary_sensor"}
            ),
            "the removed label's component reduced to its platform",
            15,
        )
        wait_until(
            lambda: config_of(mosquitto, prefix, "porch") is None,
            "the removed source's device cleared",
            15,
        )
        kitchen = config_of(mosquitto, prefix, "kitchen")
        assert kitchen is not None
        assert kitchen["components"]["safety_smoke_alarm"]["platform"] == "binary_sensor"
        assert len(kitchen["components"]["safety_smoke_alarm"]) > 1  # still a full entity
    finally:
        second.stop(2.0)
