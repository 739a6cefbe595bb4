"""MQTT publishing via paho: availability status, Last Will, queueing while the broker is away."""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from monitor.config import MqttConfig
from monitor.errors import ConfigError

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

logger = logging.getLogger(__name__)

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class PublisherStats:
    """Counters of the publisher; status messages ("online"/"offline") are not counted."""

    published: int  # messages accepted by publish() (QoS 0 handed to the socket, QoS>=1 queued)
    acknowledged: int  # QoS>=1 messages the broker has acknowledged
    dropped: int  # refused: queue full, QoS 0 while disconnected, or publish() after stop()
    connects: int  # successful connections (CONNACK accepted)
    disconnects: int  # losses of an established connection, including the one in stop()


def read_password(path: Path) -> str:
    """The password stored in `path`, without its trailing newline."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"mqtt.password_file: cannot read {path}: not UTF-8 text") from err
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"mqtt.password_file: cannot read {path}: {reason}") from err
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        raise ConfigError(f"mqtt.password_file: {path} is empty")
    return password


def _check_readable(key: str, path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"{key}: cannot read {path}: {reason}") from err


class MqttPublisher:
    """Publishes to one broker from any thread; never blocks or raises because the broker is away.

    paho keeps QoS>=1 messages in memory until the broker acknowledges them and sends them
    again after every reconnect, including messages published before the first connection
    succeeded (tests/test_publisher.py proves both cases). At most ``max_queued_messages``
    of ours wait at a time; the status messages always get through.
    """

    def __init__(self, cfg: MqttConfig, status_topic: str) -> None:
        self._cfg = cfg
        self._status_topic = status_topic
        self._client_id = cfg.client_id or f"audio-monitor-{cfg.device_id}"
        self._password: str | None = (
            read_password(cfg.password_file) if cfg.password_file is not None else None
        )
        if cfg.tls.enabled:
            # Checked here, like the password, so a bad path fails at startup, not later.
            for key in ("ca_file", "cert_file", "key_file"):
                path = getattr(cfg.tls, key)
                if path is not None:
                    _check_readable(f"mqtt.tls.{key}", path)
        self._client: mqtt.Client | None = None
        self._started = False
        self._stopping = False  # stop() began: no new messages, no more "online"
        self._closing = False  # stop() is disconnecting: a late CONNACK is dropped at once
        self._stopped = False

        # Held around client.publish() and the bookkeeping of its mid. paho callbacks must
        # never take it: on_publish runs while paho holds its message mutex, which a
        # publish() holding this lock may be waiting for.
        self._publish_lock = threading.Lock()
        self._outstanding: set[int] = set()  # mids of our QoS>=1 messages not yet acknowledged
        self._status_outstanding: set[int] = set()
        # on_publish only appends here (deque.append is atomic); _reconcile() matches the mids.
        self._acked_mids: collections.deque[int] = collections.deque()

        # Leaf lock for counters and link state; nothing is called while it is held.
        self._state_lock = threading.Lock()
        self._connected = False
        self._reachable_warning_logged = False
        self._last_refusal: str | None = None
        self._queue_full_logged = False
        self._published = 0
        self._acknowledged = 0
        self._dropped = 0
        self._connects = 0
        self._disconnects = 0

    def __repr__(self) -> str:
        return (
            f"MqttPublisher(host={self._cfg.host!r}, port={self._cfg.port}, "
            f"client_id={self._client_id!r}, connected={self.connected})"
        )

    @property
    def _where(self) -> str:
        return f"{self._cfg.host}:{self._cfg.port}"

    @property
    def connected(self) -> bool:
        with self._state_lock:
            return self._connected

    def stats(self) -> PublisherStats:
        with self._publish_lock:
            self._reconcile()
        with self._state_lock:
            return PublisherStats(
                published=self._published,
                acknowledged=self._acknowledged,
                dropped=self._dropped,
                connects=self._connects,
                disconnects=self._disconnects,
            )

    def start(self) -> None:
        """Configure the client and connect in the background; returns at once."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        if self._started or self._stopped:
            raise RuntimeError("MqttPublisher.start() may be called only once")
        cfg = self._cfg
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.will_set(self._status_topic, STATUS_OFFLINE, qos=1, retain=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, self._password)
        if cfg.tls.enabled:
            self._configure_tls(client)
        # paho annotates the delays as int, but its wait loop works with fractions of a
        # second; sub-second delays keep reconnects on a LAN (and the tests) quick.
        client.reconnect_delay_set(
            cast(int, cfg.reconnect_min_seconds), cast(int, cfg.reconnect_max_seconds)
        )
        # The queue bound is enforced in publish(), not by paho: paho's limit would also
        # refuse the "online"/"offline" status when detections fill the queue, and paho
        # refuses to change it on an established connection.
        client.max_queued_messages_set(0)
        if logger.isEnabledFor(logging.DEBUG):
            client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        client.on_connect = self._guarded("on_connect", self._on_connect)
        client.on_disconnect = self._guarded("on_disconnect", self._on_disconnect)
        client.on_publish = self._guarded("on_publish", self._on_publish)
        client.on_connect_fail = self._guarded("on_connect_fail", self._on_connect_fail)
        self._client = client
        self._started = True
        # connect_async only records the target: DNS, TCP and CONNACK all happen on paho's
        # thread, which retries with backoff, so a missing broker never blocks start().
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_seconds)
        client.loop_start()
        logger.info("MQTT: connecting to %s as %s in the background", self._where, self._client_id)

    def _configure_tls(self, client: mqtt.Client) -> None:
        import ssl

        tls = self._cfg.tls
        try:
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file is not None else None,
                certfile=str(tls.cert_file) if tls.cert_file is not None else None,
                keyfile=str(tls.key_file) if tls.key_file is not None else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ValueError) as err:
            raise ConfigError(f"mqtt.tls: cannot set up TLS: {err}") from err
        if tls.insecure:
            logger.warning("MQTT: mqtt.tls.insecure is set: the broker's host name is not checked")
            client.tls_insecure_set(True)

    def publish(self, topic: str, payload: str, *, qos: int, retain: bool) -> None:
        """Queue one message; thread-safe, and never raises because the broker is away."""
        client = self._client
        if client is None:
            raise RuntimeError("MqttPublisher.publish() before start()")
        with self._publish_lock:
            self._reconcile()
            limit = self._cfg.max_queued_messages
            if self._stopping:
                accepted = False
            elif qos > 0 and limit and len(self._outstanding) >= limit:
                accepted = False
                self._note_queue_full()
            else:
                import paho.mqtt.client as mqtt

                info = client.publish(topic, payload, qos=qos, retain=retain)
                if qos > 0:
                    # NO_CONN here still means queued: paho sends it after the next CONNACK.
                    accepted = True
                    self._outstanding.add(info.mid)
                else:
                    accepted = info.rc == mqtt.MQTT_ERR_SUCCESS
        with self._state_lock:
            if accepted:
                self._published += 1
                if qos > 0:
                    self._queue_full_logged = False  # room again: log the next overflow
            else:
                self._dropped += 1

    def stop(self, timeout_seconds: float = 2.0) -> None:
        """Publish "offline", wait (bounded) for the broker to acknowledge what is queued, close."""
        client = self._client
        if client is None or self._stopped:
            self._stopped = True
            return
        deadline = time.monotonic() + timeout_seconds
        with self._publish_lock:
            self._stopping = True
        was_connected = self.connected
        self._publish_status(STATUS_OFFLINE)
        if was_connected:
            # Waiting makes no sense without a connection: nothing can be acknowledged.
            while time.monotonic() < deadline:
                with self._publish_lock:
                    self._reconcile()
                    if not self._outstanding and not self._status_outstanding:
                        break
                time.sleep(_POLL_SECONDS)
        with self._publish_lock:
            self._reconcile()
            unacknowledged = len(self._outstanding)
        if unacknowledged:
            logger.warning(
                "MQTT: %d message(s) not acknowledged by %s at shutdown",
                unacknowledged,
                self._where,
            )
        self._closing = True
        client.disconnect()
        # loop_stop() joins paho's thread without a timeout; join through a helper so stop()
        # stays bounded if that thread is stuck in a slow connect.
        stopper = threading.Thread(target=client.loop_stop, name="mqtt-loop-stop", daemon=True)
        stopper.start()
        stopper.join(max(deadline - time.monotonic(), 0.5))
        if stopper.is_alive():
            logger.warning("MQTT: network thread did not stop within %.1f s", timeout_seconds)
        with self._state_lock:
            self._connected = False
        self._stopped = True

    def _publish_status(self, payload: str) -> None:
        client = self._client
        if client is None:
            return
        with self._publish_lock:
            info = client.publish(self._status_topic, payload, qos=1, retain=True)
            self._status_outstanding.add(info.mid)

    def _reconcile(self) -> None:
        """Match acknowledged mids with our messages; caller holds _publish_lock."""
        acknowledged = 0
        while True:
            try:
                mid = self._acked_mids.popleft()
            except IndexError:
                break
            if mid in self._outstanding:
                self._outstanding.discard(mid)
                acknowledged += 1
            else:
                # A status message, or a QoS 0 message (paho reports those once written).
                self._status_outstanding.discard(mid)
        if acknowledged:
            with self._state_lock:
                self._acknowledged += acknowledged

    def _note_queue_full(self) -> None:
        with self._state_lock:
            first = not self._queue_full_logged
            self._queue_full_logged = True
        if first:
            logger.warning(
                "MQTT: queue full (%d messages waiting for %s); dropping new messages",
                self._cfg.max_queued_messages,
                self._where,
            )

    def _guarded(self, name: str, callback: Callable[..., None]) -> Callable[..., None]:
        """Wrap a paho callback: an exception escaping it would end paho's network thread."""

        def guarded(*args: Any) -> None:
            try:
                callback(*args)
            except Exception:
                logger.exception("MQTT: error in %s callback (ignored)", name)

        return guarded

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        _flags: Any,
        reason_code: Any,
        _properties: Any,
    ) -> None:
        if reason_code.is_failure:
            refusal = str(reason_code)
            with self._state_lock:
                repeated = refusal == self._last_refusal
                self._last_refusal = refusal
            if repeated:
                logger.debug("MQTT: %s refused the connection again: %s", self._where, refusal)
            else:
                logger.error(
                    "MQTT: %s refused the connection: %s (check mqtt.username, "
                    "mqtt.password_file and the broker's ACL); retrying",
                    self._where,
                    refusal,
                )
            return
        with self._state_lock:
            self._connected = True
            self._connects += 1
            self._last_refusal = None
            self._reachable_warning_logged = False
            connects = self._connects
        if self._closing:
            # paho's thread finished a connect that raced with stop()'s disconnect().
            client.disconnect()
            return
        if self._stopping:
            logger.info("MQTT: connected to %s while stopping", self._where)
            return
        logger.info("MQTT: connected to %s (connection %d)", self._where, connects)
        # Every time: after a broker restart, or a Last Will fired during a network blip,
        # the retained status would otherwise stay "offline".
        self._publish_status(STATUS_ONLINE)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: Any,
        reason_code: Any,
        _properties: Any,
    ) -> None:
        with self._state_lock:
            was_connected = self._connected
            self._connected = False
            if was_connected:
                self._disconnects += 1
                # The warning below covers the failed reconnects that follow.
                self._reachable_warning_logged = True
        if not was_connected:
            logger.debug("MQTT: connection attempt to %s ended: %s", self._where, reason_code)
        elif self._stopping:
            logger.info("MQTT: disconnected from %s", self._where)
        else:
            logger.warning(
                "MQTT: lost the connection to %s (%s); reconnecting in the background, "
                "messages are queued meanwhile",
                self._where,
                reason_code,
            )

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        # paho calls this from inside its `except OSError`, so the cause is still at hand.
        error = sys.exc_info()[1]
        reason = str(error) if error is not None else "unknown error"
        with self._state_lock:
            first = not self._reachable_warning_logged
            self._reachable_warning_logged = True
        if first and not self._stopping:
            logger.warning(
                "MQTT: cannot connect to %s (%s); retrying in the background, "
                "messages are queued meanwhile",
                self._where,
                reason,
            )
        else:
            logger.debug("MQTT: cannot connect to %s (%s)", self._where, reason)

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        mid: int,
        _reason_code: Any,
        _properties: Any,
    ) -> None:
        self._acked_mids.append(mid)
