"""Topics and settings shared by the MQTT publisher tests."""

from __future__ import annotations

from typing import Any

from monitor.config import MqttConfig
from tests.support.broker import Broker

STATUS = "am-test/test/status"
DATA = "am-test/test/data"


def publisher_settings(broker: Broker, **overrides: Any) -> dict[str, Any]:
    """MqttConfig fields for `broker`: quick keepalive and reconnects, then `overrides`."""
    settings: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "device_id": "test",
        "keepalive_seconds": 5,
        "reconnect_min_seconds": 0.2,
        "reconnect_max_seconds": 1.0,
    }
    settings.update(overrides)
    return settings


def make_config(broker: Broker, **overrides: Any) -> MqttConfig:
    """A publisher config for `broker` (see publisher_settings)."""
    return MqttConfig(**publisher_settings(broker, **overrides))
