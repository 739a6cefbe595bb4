"""The MQTT output: detections, retained ON/OFF states and health over one publisher."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from monitor.config import LabelSetConfig, MqttConfig, ScoresConfig
from monitor.frames import ControlResult, Event, Scores
from monitor.outputs.mqtt.discovery import (
    BIRTH_ONLINE,
    DeviceInfo,
    components,
    discovery_messages,
    published_components,
)
from monitor.outputs.mqtt.payloads import (
    STATE_OFF,
    Message,
    Topics,
    control_result_message,
    event_messages,
    health_messages,
    initial_state_messages,
    scores_message,
)
from monitor.outputs.mqtt.publisher import MqttPublisher
from monitor.outputs.sink import DeliveryStats, HealthReport, Sink

logger = logging.getLogger(__name__)

# After Home Assistant's birth message, wait a little: a restarting HA subscribes to the
# entities' topics only once it has processed the discovery it just asked for.
BIRTH_DELAY_SECONDS = (1.0, 5.0)


class MqttSink(Sink):
    """Owns the publisher, the topic layout and the payloads; the pipeline sees only a Sink."""

    name = "mqtt"

    def __init__(
        self,
        cfg: MqttConfig,
        label_sets_of: Mapping[str, Sequence[LabelSetConfig]],
        *,
        per_source: bool,
        discovery: DeviceInfo | None = None,
        scores: ScoresConfig | None = None,
        control: bool = False,
    ) -> None:
        """`label_sets_of`: source id -> the label sets it is scored against (config order);
        `discovery`: publish Home Assistant discovery for this monitor, or None; `scores`:
        publish the top labels per source at most once per interval, or None; `control`:
        take commands on the control topic (handed to receive_commands' handler)."""
        self.topics = Topics.from_config(cfg, per_source=per_source)
        self.qos = cfg.qos
        self.label_sets_of = dict(label_sets_of)
        self.discovery = discovery
        self.scores = scores if scores is not None and scores.enabled else None
        self._last_scores: dict[str, float] = {}  # source id -> time.monotonic() of the last
        self._random = random.Random()
        self._birth_timer: threading.Timer | None = None
        self._command_handler: Callable[[bytes], None] | None = None
        # Reads the password file now: a missing secret is a config error, before any load.
        self.publisher = MqttPublisher(cfg, self.topics.status)
        if discovery is not None:
            self.publisher.on_connected(self.publish_discovery)
            self.publisher.subscribe(discovery.birth_topic, self._on_birth)
            self.publisher.subscribe(discovery.config_wildcard, self._on_retained_config)
        if control:
            self.publisher.subscribe(self.topics.control, self._on_command)

    def publish_discovery(self, removed: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """Every source's device config (retained), with `removed` components cleared."""
        if self.discovery is None:
            return
        for msg in discovery_messages(self.discovery, self.label_sets_of, self.topics, removed):
            self._send(msg)

    def receive_commands(self, handler: Callable[[bytes], None]) -> None:
        self._command_handler = handler

    def _on_command(self, topic: str, payload: bytes, retained: bool) -> None:
        handler = self._command_handler
        if retained:
            # A retained command would be applied again at every connect.
            if payload:
                logger.warning(
                    "ignored a retained command on %s: send commands without retain (an empty "
                    "retained message clears it)",
                    topic,
                )
            return
        if handler is not None:
            handler(payload)

    def update_labels(self, label_sets_of: Mapping[str, Sequence[LabelSetConfig]]) -> None:
        """New labels get a retained OFF, removed ones lose their retained state and their
        entity; the discovery of every source is published again."""
        old, new = self.label_sets_of, dict(label_sets_of)
        self.label_sets_of = new
        before, after = self._state_topics(old), self._state_topics(new)
        for topic in sorted(after - before):
            self._send(Message(topic, STATE_OFF, self.qos, retain=True))
        for topic in sorted(before - after):
            self._send(Message(topic, "", self.qos, retain=True))
        discovery = self.discovery
        if discovery is None:
            return
        removed: dict[str, dict[str, str]] = {}
        for source_id, sets in old.items():
            was = components(discovery, source_id, sets, self.topics)
            now = components(discovery, source_id, new.get(source_id, ()), self.topics)
            gone = {cid: str(c["platform"]) for cid, c in was.items() if cid not in now}
            if gone:
                removed[discovery.node_id(source_id)] = gone
        self.publish_discovery(removed)

    def _state_topics(self, label_sets_of: Mapping[str, Sequence[LabelSetConfig]]) -> set[str]:
        """The retained state topic of every label of every source."""
        return {m.topic for m in initial_state_messages(label_sets_of, self.topics, self.qos)}

    def publish_control_result(self, result: ControlResult) -> None:
        self._send(control_result_message(result, self.topics))

    def _on_birth(self, _topic: str, payload: bytes, _retained: bool) -> None:
        if payload.decode(errors="replace") != BIRTH_ONLINE:
            return
        timer = threading.Timer(self._random.uniform(*BIRTH_DELAY_SECONDS), self.publish_discovery)
        timer.daemon = True
        timer.start()
        self._birth_timer = timer

    def _on_retained_config(self, topic: str, payload: bytes, retained: bool) -> None:
        """A device config the broker kept from an earlier run: clear what this config no
        longer has, so no ghost entity comes back (only retained ones: ours echo live)."""
        discovery = self.discovery
        if discovery is None or not retained or not payload:
            return
        node = topic.split("/")[-2]
        if not node.startswith(discovery.node_prefix):
            return  # another device's
        current = {discovery.node_id(s): s for s in self.label_sets_of}
        if node not in current:
            logger.info("Home Assistant: removing the device of a source no longer configured")
            self.publisher.publish(topic, "", qos=1, retain=True)
            return
        old = published_components(payload) or {}
        source_id = current[node]
        now = components(discovery, source_id, self.label_sets_of[source_id], self.topics)
        stale = {cid: platform for cid, platform in old.items() if cid not in now}
        if stale:
            logger.info("Home Assistant: removing %d entit(ies) of %s", len(stale), source_id)
            self.publish_discovery({node: stale})

    def start(self) -> None:
        """Connect in the background and clear any ON state a crashed run left retained."""
        self.publisher.start()
        for msg in initial_state_messages(self.label_sets_of, self.topics, self.qos):
            self._send(msg)

    def publish_event(self, event: Event) -> None:
        for msg in event_messages(event, self.topics, self.qos):
            self._send(msg)

    def publish_scores(self, scores: Sequence[Scores]) -> None:
        cfg = self.scores
        if cfg is None or not scores:
            return
        source_id = scores[0].window.source_id
        now = time.monotonic()
        last = self._last_scores.get(source_id)
        if last is not None and now - last < cfg.interval_seconds:
            return
        self._last_scores[source_id] = now
        self._send(scores_message(scores, self.topics, cfg.top_k))

    def publish_health(self, report: HealthReport) -> None:
        for msg in health_messages(report, self.topics):
            self._send(msg)

    def stop(self, timeout_seconds: float) -> None:
        if self._birth_timer is not None:
            self._birth_timer.cancel()
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
