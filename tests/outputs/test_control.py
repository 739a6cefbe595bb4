"""Live control over a real broker: commands in, answers out, entities follow label changes."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from monitor.config import LabelSetConfig
from monitor.frames import ControlResult, LabelSetView
from monitor.outputs.mqtt.discovery import DeviceInfo
from monitor.outputs.mqtt.payloads import Topics, control_result_message
from monitor.outputs.mqtt.sink import MqttSink
from tests.support.broker import Broker, Subscriber
from tests.support.mqtt import make_config
from tests.support.waiting import wait_until

PETS = LabelSetConfig(name="pets", labels=["dog barking", "cat"])


def test_an_answer_carries_ok_or_the_error_and_the_labels_after_it() -> None:
    views = (LabelSetView("pets", True, (("dog barking", 0.5),)), LabelSetView("home", False, ()))
    now = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    topics = Topics("am", "house", per_source=True)
    ok = control_result_message(
        ControlResult("add_label", True, "added", "r1", now, None, views), topics
    )
    assert (ok.topic, ok.retain, ok.qos) == ("am/house/control/result", False, 1)
    assert json.loads(ok.payload) == {
        "command": "add_label",
        "ok": True,
        "detail": "added",
        "id": "r1",
        "time": "2026-12-01T12:00:00.000Z",
        "profile": None,
        "label_sets": {
            "pets": {"enabled": True, "labels": {"dog barking": 0.5}},
            "home": {"enabled": False, "labels": {}},
        },
    }
    bad = json.loads(
        control_result_message(
            ControlResult("", False, "malformed JSON", None, now, "night", views), topics
        ).payload
    )
    assert bad["error"] == "malformed JSON" and "detail" not in bad and "id" not in bad
    assert Topics("am", "house").control == "am/house/control"  # one per monitor, any layout


def test_commands_arrive_retained_ones_are_ignored_and_answers_go_out(
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
    caplog: pytest.LogCaptureFixture,
) -> None:
    prefix = f"ctl{uuid.uuid4().hex[:8]}"
    command_topic = f"{prefix}/house/control"
    # Left retained by someone: it would be applied again at every connect.
    mosquitto.publish(command_topic, '{"command": "reset"}', retain=True)
    cfg = make_config(mosquitto, device_id="house", topic_prefix=prefix, outbox={"enabled": False})
    sink = MqttSink(cfg, {"porch": [PETS]}, per_source=True, control=True)
    received: list[bytes] = []
    sink.receive_commands(received.append)
    results = mqtt_subscriber(mosquitto, f"{prefix}/house/control/result")
    try:
        with caplog.at_level(logging.WARNING):
            sink.start()
            wait_until(lambda: "ignored a retained command" in caplog.text, "the warning", 10)
        mosquitto.publish(command_topic, '{"command": "show"}')
        wait_until(lambda: received != [], "the live command")
        assert received == [b'{"command": "show"}']
        now = datetime.now(timezone.utc)
        sink.publish_control_result(ControlResult("show", True, "no change", None, now, None, ()))
        results.wait_for(lambda ms: len(ms) >= 1, what="the answer")
        assert json.loads(results.payloads(f"{prefix}/house/control/result")[-1])["ok"] is True
    finally:
        mosquitto.publish(command_topic, "", retain=True)
        sink.stop(2.0)


def test_entities_and_states_follow_a_label_change(mosquitto: Broker) -> None:
    prefix = f"ha{uuid.uuid4().hex[:8]}"
    cfg = make_config(mosquitto, device_id="house", topic_prefix="am", outbox={"enabled": False})
    sink = MqttSink(
        cfg, {"porch": [PETS]}, per_source=True, discovery=DeviceInfo(prefix, "house", "tiny")
    )
    config_topic = f"{prefix}/device/audio_monitor_house_porch/config"

    def components() -> dict[str, dict[str, str]]:
        text = mosquitto.read_retained(config_topic)
        return json.loads(text)["components"] if text else {}

    sink.start()
    try:
        wait_until(lambda: "pets_cat" in components(), "the first discovery", 10)
        mosquitto.wait_for_retained("am/house/porch/pets/cat/state", "OFF")
        changed = LabelSetConfig(name="pets", labels=["dog barking", "kettle whistling"])
        sink.update_labels({"porch": [changed]})
        wait_until(lambda: "pets_kettle_whistling" in components(), "the new entity", 10)
        comps = components()
        assert comps["pets_cat"] == {"platform": "binary_sensor"}  # removed in Home Assistant
        assert comps["pets_kettle_whistling"]["state_topic"] == (
            "am/house/porch/pets/kettle_whistling/state"
        )
        assert comps["pets_event"]["event_types"] == ["dog_barking", "kettle_whistling"]
        mosquitto.wait_for_retained("am/house/porch/pets/kettle_whistling/state", "OFF")
        wait_until(
            lambda: mosquitto.read_retained("am/house/porch/pets/cat/state") is None,
            "the removed label's retained state cleared",
            10,
        )
    finally:
        sink.stop(2.0)
