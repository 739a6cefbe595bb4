"""The MQTT output: detections, retained ON/OFF states and health over one publisher."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from monitor.config import LabelSetConfig, MqttConfig
from monitor.frames import Event
from monitor.outputs.mqtt.payloads import (
    Message,
    Topics,
    event_messages,
    health_messages,
    initial_state_messages,
)
from monitor.outputs.mqtt.publisher import MqttPublisher
from monitor.outputs.sink import DeliveryStats, HealthReport, Sink


class MqttSink(Sink):
    """Owns the publisher, the topic layout and the payloads; the pipeline sees only a Sink."""

    name = "mqtt"

    def __init__(
        self,
        cfg: MqttConfig,
        label_sets_of: Mapping[str, Sequence[LabelSetConfig]],
        *,
        per_source: bool,
    ) -> None:
        """`label_sets_of`: source id -> the label sets it is scored against (config order)."""
        self.topics = Topics.from_config(cfg, per_source=per_source)
        self.qos = cfg.qos
        self.label_sets_of = dict(label_sets_of)
        # Reads the password file now: a missing secret is a config error, before any load.
        self.publisher = MqttPublisher(cfg, self.topics.status)

    def start(self) -> None:
        """Connect in the background and clear any ON state a crashed run left retained."""
        self.publisher.start()
        for msg in initial_state_messages(self.label_sets_of, self.topics, self.qos):
            self._send(msg)

    def publish_event(self, event: Event) -> None:
        for msg in event_messages(event, self.topics, self.qos):
            self._send(msg)

    def publish_health(self, report: HealthReport) -> None:
        for msg in health_messages(report, self.topics):
            self._send(msg)

    def stop(self, timeout_seconds: float) -> None:
        self.publisher.stop(timeout_seconds=timeout_seconds)

    def delivery(self) -> DeliveryStats:
        stats = self.publisher.stats()
        return DeliveryStats(
            connected=self.publisher.connected,
            pending=stats.outbox_pending,
            dropped=stats.outbox_dropped,
        )

    def _send(self, msg: Message) -> None:
        self.publisher.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
