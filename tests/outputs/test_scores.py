"""The scores topic: the top labels per set of a source, at most once per interval."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import numpy as np

from monitor.config import ScoresConfig
from monitor.frames import Scores, Window
from monitor.outputs.mqtt.discovery import DeviceInfo, discovery_messages
from monitor.outputs.mqtt.payloads import Topics, scores_message
from monitor.outputs.mqtt.sink import MqttSink
from tests.support.broker import Broker, Subscriber
from tests.support.mqtt import make_config
from tests.support.waiting import wait_until

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def window_scores(source: str, second: int) -> list[Scores]:
    window = Window(
        source,
        np.zeros(10, np.float32),
        48000,
        0,
        10,
        T0 + timedelta(seconds=second - 1),
        T0 + timedelta(seconds=second),
    )
    return [
        Scores(window, "pets", {"dog": 0.2, "cat": 0.7, "bird": 0.1}),
        Scores(window, "alarms", {"smoke": 0.05, "glass": 0.95}),
    ]


def test_the_message_holds_the_top_labels_of_each_set_in_order() -> None:
    msg = scores_message(window_scores("porch", 3), Topics("am", "house", per_source=True), 2)
    assert (msg.topic, msg.retain, msg.qos) == ("am/house/porch/scores", False, 0)
    body = json.loads(msg.payload)
    assert body["source"] == "porch" and body["window_end"] == "2026-03-01T00:00:03.000Z"
    assert body["sets"] == {
        "pets": [{"label": "cat", "score": 0.7}, {"label": "dog", "score": 0.2}],
        "alarms": [{"label": "glass", "score": 0.95}, {"label": "smoke", "score": 0.05}],
    }
    flat = scores_message(window_scores("mic", 3), Topics("am", "house"), 1)
    assert flat.topic == "am/house/scores"


def test_discovery_adds_top_label_sensors_only_with_the_scores_topic() -> None:
    from monitor.config import LabelSetConfig

    sets = [LabelSetConfig(name="pets", labels=["dog", "cat"])]
    topics = Topics("am", "house", per_source=True)
    off, on = (
        json.loads(m.payload)["components"]
        for flag in (False, True)
        for m in discovery_messages(DeviceInfo("ha", "house", "m", flag), {"porch": sets}, topics)
    )
    assert "pets_top_label" not in off
    assert on["pets_top_label"]["state_topic"] == "am/house/porch/scores"
    assert on["pets_top_label"]["value_template"] == "{{ value_json.sets['pets'][0].label }}"
    assert on["pets_top_score"]["entity_category"] == "diagnostic"


def test_at_most_one_message_per_source_and_interval(
    mosquitto: Broker, mqtt_subscriber: Callable[..., Subscriber]
) -> None:
    prefix = f"sc{uuid.uuid4().hex[:8]}"
    cfg = make_config(mosquitto, device_id="house", topic_prefix=prefix, outbox={"enabled": False})
    sink = MqttSink(
        cfg,
        {"kitchen": [], "porch": []},
        per_source=True,
        scores=ScoresConfig(enabled=True, interval_seconds=1.0, top_k=1),
    )
    sub = mqtt_subscriber(mosquitto, f"{prefix}/house/+/scores")
    sink.start()
    try:
        # QoS 0 and not queued: a view of now is worthless later, so wait for the broker.
        wait_until(lambda: sink.publisher.connected, "connected")
        # Windows every 0.1 s from two sources for 2.5 s: each source gets 3 messages.
        started = time.monotonic()
        second = 0
        while time.monotonic() - started < 2.5:
            second += 1
            sink.publish_scores(window_scores("kitchen", second))
            sink.publish_scores(window_scores("porch", second))
            time.sleep(0.1)
        sub.wait_for(lambda ms: len(ms) >= 6, what="scores of both sources")
        time.sleep(0.3)
        for source in ("kitchen", "porch"):
            bodies = [json.loads(p) for p in sub.payloads(f"{prefix}/house/{source}/scores")]
            assert len(bodies) == 3, [b["window_end"] for b in bodies]
            assert all(b["sets"]["pets"] == [{"label": "cat", "score": 0.7}] for b in bodies)
    finally:
        sink.stop(2.0)
