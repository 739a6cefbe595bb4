"""MQTT publishing via paho: availability status, Last Will, an on-disk outbox, calm reconnects."""

from __future__ import annotations

import collections
import logging
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from monitor.config import MqttConfig
from monitor.config.secrets import read_password
from monitor.errors import ConfigError
from monitor.outputs.mqtt.outbox import Outbox

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

logger = logging.getLogger(__name__)

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
_POLL_SECONDS = 0.02
# paho numbers in-flight messages with 16-bit ids and refuses a reused one: keep well below.
_PAHO_WINDOW_CAP = 50_000
_FEED_BATCH = 100  # outbox messages handed to paho per hold of the publish lock
_FEED_IDLE_SECONDS = 5.0  # the feeder also wakes this often to expire old outbox messages
_ATTEMPT_HISTORY = 64


@dataclass(frozen=True)
class PublisherStats:
    """Counters of the publisher; status messages ("online"/"offline") are not counted."""

    published: int  # messages accepted by publish() (QoS 0 handed to the socket, QoS>=1 queued)
    acknowledged: int  # QoS>=1 messages acknowledged, including ones restored from the outbox
    dropped: int  # refused: memory full (no outbox), QoS 0 while disconnected, after stop()
    connects: int  # successful connections (CONNACK accepted)
    disconnects: int  # losses of an established connection, including the one in stop()
    connect_attempts: int = 0  # connection attempts (TCP/TLS connect + CONNECT), incl. failed
    outbox_pending: int = 0  # messages on disk waiting for the broker's acknowledgement
    outbox_restored: int = 0  # messages an earlier run left in the outbox, sent again
    outbox_dropped: int = 0  # oldest messages dropped because the outbox was full
    outbox_expired: int = 0  # messages dropped because older than mqtt.outbox.max_age_hours
    outbox_corrupt: int = 0  # unreadable outbox entries removed
    outbox_write_errors: int = 0  # messages that could not be written (kept in memory only)


def reconnect_delay_seconds(
    failures: int, min_seconds: float, max_seconds: float, rng: random.Random
) -> float:
    """The wait before the next attempt after `failures` consecutive failed ones.

    The base doubles from `min_seconds` per failure up to `max_seconds`; the wait is a random
    50-100 % of it ("equal jitter"), so monitors that lost the same broker do not all come
    back in the same instant, and it never exceeds the cap.
    """
    exponent = min(max(failures - 1, 0), 40)
    base = min(min_seconds * 2.0**exponent, max_seconds)
    return base * rng.uniform(0.5, 1.0)


def _message_handler(
    on_message: Callable[[str, bytes, bool], None],
) -> Callable[[Any, Any, Any], None]:
    """paho's (client, userdata, message) callback, handing on only what the caller needs."""

    def handle(_client: Any, _userdata: Any, message: Any) -> None:
        on_message(str(message.topic), bytes(message.payload), bool(message.retain))

    return handle


def _check_readable(key: str, path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"{key}: cannot read {path}: {reason}") from err


class MqttPublisher:
    """Publishes to one broker from any thread; never blocks or raises because the broker is away.

    QoS>=1 messages that are not retained (detections) are first written to the on-disk
    outbox (unless mqtt.outbox.enabled is false) and removed when the broker acknowledges
    them, so they survive a restart of the monitor; at start the outbox's leftovers are sent
    again, oldest first. paho holds at most ``max_queued_messages`` of ours in memory; with
    the outbox the rest wait on disk and a feeder thread hands them over as acknowledgements
    come in, without it new messages are dropped. Retained messages (states, status) stay in
    memory only: a newer one supersedes them, and they are published again at start.
    paho resends unacknowledged messages after every reconnect, including the ones
    published before the first connection succeeded.
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
        # Last: it takes the directory's lock, which stop() releases.
        self._outbox: Outbox | None = (
            Outbox.for_client(cfg.outbox, self._client_id) if cfg.outbox.enabled else None
        )
        if self._outbox is not None and len(self._outbox):
            logger.info(
                "MQTT: %d message(s) left in the outbox %s by an earlier run will be sent",
                len(self._outbox),
                self._outbox.directory,
            )
        self._client: mqtt.Client | None = None
        # topic filter -> on_message(topic, payload, retained); subscribed on every connect.
        self._subscriptions: dict[str, Callable[[str, bytes, bool], None]] = {}
        self._connect_hooks: list[Callable[[], None]] = []
        self._started = False
        self._stopping = False  # stop() began: no new messages, no more "online"
        self._closing = False  # stop() is disconnecting: a late CONNACK is dropped at once
        self._stopped = False
        limit = cfg.max_queued_messages
        self._window = min(limit, _PAHO_WINDOW_CAP) if limit else _PAHO_WINDOW_CAP
        self._random = random.Random()

        # Held around client.publish() and the bookkeeping of its mid. paho callbacks must
        # never take it: on_publish runs while paho holds its message mutex, which a
        # publish() holding this lock may be waiting for.
        self._publish_lock = threading.Lock()
        # mid -> outbox sequence number (None: memory only) of our QoS>=1 messages in paho.
        self._in_paho: dict[int, int | None] = {}
        self._status_outstanding: set[int] = set()
        # Outbox messages not handed to paho yet, oldest first (restored ones, overflow).
        self._backlog: collections.deque[int] = collections.deque(
            self._outbox.pending() if self._outbox is not None else ()
        )
        # on_publish only appends here (deque.append is atomic); _reconcile() matches the mids.
        self._acked_mids: collections.deque[int] = collections.deque()
        self._feeder: threading.Thread | None = None
        self._feeder_wake = threading.Event()
        self._feeder_exit = False

        # Leaf lock for counters and link state; nothing is called while it is held.
        self._state_lock = threading.Lock()
        self._connected = False
        # A connection attempt is under way (from start() or paho's pre-connect until its
        # outcome): stop() waits for it rather than dropping what was queued meanwhile.
        self._attempt_open = False
        self._reachable_warning_logged = False
        self._last_refusal: str | None = None
        self._queue_full_logged = False
        self._published = 0
        self._acknowledged = 0
        self._dropped = 0
        self._connects = 0
        self._disconnects = 0
        self._connect_attempts = 0
        self._attempts_since_connect = 0
        self._attempt_times: collections.deque[float] = collections.deque(maxlen=_ATTEMPT_HISTORY)

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

    @property
    def outbox_directory(self) -> Path | None:
        """This client's outbox directory (None when the outbox is disabled)."""
        return self._outbox.directory if self._outbox is not None else None

    def connect_attempt_times(self) -> tuple[float, ...]:
        """time.monotonic() of the last connection attempts (up to 64), oldest first."""
        with self._state_lock:
            return tuple(self._attempt_times)

    def stats(self) -> PublisherStats:
        with self._publish_lock:
            self._reconcile()
        box = self._outbox.stats() if self._outbox is not None else None
        with self._state_lock:
            return PublisherStats(
                published=self._published,
                acknowledged=self._acknowledged,
                dropped=self._dropped,
                connects=self._connects,
                disconnects=self._disconnects,
                connect_attempts=self._connect_attempts,
                outbox_pending=box.pending if box else 0,
                outbox_restored=box.restored if box else 0,
                outbox_dropped=box.dropped_full if box else 0,
                outbox_expired=box.dropped_expired if box else 0,
                outbox_corrupt=box.dropped_corrupt if box else 0,
                outbox_write_errors=box.write_errors if box else 0,
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
        # Replaced before every wait by _on_pre_connect (jittered backoff); see there.
        self._set_reconnect_delay(client, cfg.reconnect_min_seconds)
        # The queue bound is enforced in publish(), not by paho: paho's limit would also
        # refuse the "online"/"offline" status when detections fill the queue, and paho
        # refuses to change it on an established connection.
        client.max_queued_messages_set(0)
        if logger.isEnabledFor(logging.DEBUG):
            client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        client.on_pre_connect = self._guarded("on_pre_connect", self._on_pre_connect)
        client.on_connect = self._guarded("on_connect", self._on_connect)
        client.on_disconnect = self._guarded("on_disconnect", self._on_disconnect)
        client.on_publish = self._guarded("on_publish", self._on_publish)
        client.on_connect_fail = self._guarded("on_connect_fail", self._on_connect_fail)
        for topic, on_message in self._subscriptions.items():
            client.message_callback_add(
                topic, self._guarded(f"on_message {topic}", _message_handler(on_message))
            )
        self._client = client
        self._started = True
        if self._outbox is not None:
            self._feeder = threading.Thread(target=self._feed_loop, name="mqtt-outbox", daemon=True)
            self._feeder.start()
            self._feeder_wake.set()  # hand the restored messages over now
        # connect_async only records the target: DNS, TCP and CONNACK all happen on paho's
        # thread, which retries with backoff, so a missing broker never blocks start().
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_seconds)
        with self._state_lock:
            self._attempt_open = True
        client.loop_start()
        logger.info("MQTT: connecting to %s as %s in the background", self._where, self._client_id)

    def subscribe(self, topic: str, on_message: Callable[[str, bytes, bool], None]) -> None:
        """Hear messages on `topic` (wildcards allowed), subscribed again after every connect.

        Call before start(). `on_message(topic, payload, retained)` runs on paho's network
        thread: it must return quickly and may publish.
        """
        if self._started:
            raise RuntimeError("MqttPublisher.subscribe() must come before start()")
        self._subscriptions[topic] = on_message

    def on_connected(self, callback: Callable[[], None]) -> None:
        """Run `callback` after every (re)connect, once "online" is out (paho's thread)."""
        if self._started:
            raise RuntimeError("MqttPublisher.on_connected() must come before start()")
        self._connect_hooks.append(callback)

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
        """Queue one message; thread-safe, and never raises because the broker is away.

        A detection (QoS>=1, not retained) is on disk when this returns (one fsync'd file).
        """
        client = self._client
        if client is None:
            raise RuntimeError("MqttPublisher.publish() before start()")
        durable = self._outbox is not None and qos > 0 and not retain
        with self._publish_lock:
            self._reconcile()
            if self._stopping:
                accepted = False
            elif durable and self._publish_durable(client, topic, payload, qos):
                accepted = True
            else:
                accepted = self._publish_in_memory(client, topic, payload, qos, retain)
        with self._state_lock:
            if accepted:
                self._published += 1
                if qos > 0:
                    self._queue_full_logged = False  # room again: log the next overflow
            else:
                self._dropped += 1

    def _publish_durable(self, client: mqtt.Client, topic: str, payload: str, qos: int) -> bool:
        """Write to the outbox, then hand to paho if it has room; caller holds _publish_lock."""
        assert self._outbox is not None
        seq = self._outbox.add(topic, payload, qos)
        if seq is None:
            return False  # not writable (logged): the caller falls back to memory only
        if self._backlog or len(self._in_paho) >= self._window:
            # Older messages wait on disk: the feeder hands them over in order.
            self._backlog.append(seq)
            self._feeder_wake.set()
        elif not self._hand_over(client, topic, payload, qos, seq):
            self._backlog.append(seq)
            self._feeder_wake.set()
        return True

    def _publish_in_memory(
        self, client: mqtt.Client, topic: str, payload: str, qos: int, retain: bool
    ) -> bool:
        import paho.mqtt.client as mqtt

        limit = self._cfg.max_queued_messages
        if qos > 0 and limit and len(self._in_paho) >= limit:
            self._note_queue_full()
            return False
        if qos > 0:
            if self._hand_over(client, topic, payload, qos, None, retain=retain):
                return True
            self._note_queue_full()
            return False
        info = client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def _hand_over(
        self,
        client: mqtt.Client,
        topic: str,
        payload: str,
        qos: int,
        seq: int | None,
        *,
        retain: bool = False,
    ) -> bool:
        """client.publish() a QoS>=1 message; False if paho refused to store it."""
        import paho.mqtt.client as mqtt

        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            return False  # paho's message ids are all in use
        # Any other code (NO_CONN included) still means stored: sent after the next CONNACK.
        self._in_paho[info.mid] = seq
        return True

    def _feed_loop(self) -> None:
        """Hand outbox messages to paho as its window frees up; expire old ones meanwhile."""
        while True:
            self._feeder_wake.wait(_FEED_IDLE_SECONDS)
            self._feeder_wake.clear()
            if self._feeder_exit:
                return
            try:
                self._feed()
            except Exception:
                logger.exception("MQTT: error while sending outbox messages (retrying)")
                time.sleep(1.0)

    def _feed(self) -> None:
        client, box = self._client, self._outbox
        if client is None or box is None:
            return
        box.expire()
        while True:
            with self._publish_lock:
                self._reconcile()
                if self._closing:
                    return
                handed = 0
                while self._backlog and len(self._in_paho) < self._window and handed < _FEED_BATCH:
                    seq = self._backlog.popleft()
                    message = box.read(seq)
                    if message is None:
                        continue  # dropped meanwhile (bounds, age) or unreadable: counted
                    if not self._hand_over(
                        client, message.topic, message.payload, message.qos, seq
                    ):
                        self._backlog.appendleft(seq)
                        return  # paho is full: the next acknowledgement wakes us
                    handed += 1
                more = bool(self._backlog) and len(self._in_paho) < self._window
            if not more:
                return

    def stop(self, timeout_seconds: float = 2.0) -> None:
        """Publish "offline", wait (bounded) for a connection under way and acknowledgements, close.

        What the broker has not acknowledged by then stays in the outbox for the next start.
        """
        client = self._client
        if client is None or self._stopped:
            self._stopped = True
            if self._outbox is not None:
                self._outbox.close()
            return
        deadline = time.monotonic() + timeout_seconds
        with self._publish_lock:
            self._stopping = True
        # A stop soon after start (a source that refuses to start) often comes while the
        # first connection is under way; waiting for it delivers "offline" and what was
        # queued instead of losing them.
        was_connected = self._await_open_attempt(deadline)
        self._publish_status(STATUS_OFFLINE)
        if was_connected:
            # Waiting makes no sense without a connection: nothing can be acknowledged.
            self._feeder_wake.set()
            while time.monotonic() < deadline:
                with self._publish_lock:
                    self._reconcile()
                    if not (self._in_paho or self._backlog or self._status_outstanding):
                        break
                time.sleep(_POLL_SECONDS)
        with self._publish_lock:
            self._reconcile()
            self._closing = True
            kept = sum(seq is not None for seq in self._in_paho.values()) + len(self._backlog)
            lost = sum(seq is None for seq in self._in_paho.values())
        if kept:
            logger.warning(
                "MQTT: %d message(s) not acknowledged by %s at shutdown are kept in the "
                "outbox %s for the next start",
                kept,
                self._where,
                self.outbox_directory,
            )
        if lost:
            logger.warning(
                "MQTT: %d message(s) not acknowledged by %s at shutdown are lost",
                lost,
                self._where,
            )
        self._stop_feeder(deadline)
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
        if self._outbox is not None:
            self._outbox.close()
        self._stopped = True

    def _stop_feeder(self, deadline: float) -> None:
        feeder = self._feeder
        if feeder is None:
            return
        self._feeder_exit = True
        self._feeder_wake.set()
        feeder.join(max(deadline - time.monotonic(), 0.5))
        if feeder.is_alive():
            logger.warning("MQTT: outbox thread did not stop in time")

    def _await_open_attempt(self, deadline: float) -> bool:
        """Whether connected, after waiting (until `deadline`) for an attempt under way."""
        while True:
            with self._state_lock:
                if self._connected or not self._attempt_open:
                    return self._connected
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECONDS)

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
            if mid in self._in_paho:
                seq = self._in_paho.pop(mid)
                acknowledged += 1
                if seq is not None and self._outbox is not None:
                    self._outbox.remove(seq)
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
                len(self._in_paho),
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

    @staticmethod
    def _set_reconnect_delay(client: mqtt.Client, delay_seconds: float) -> None:
        # paho annotates the delays as int, but its wait loop works with fractions of a
        # second; sub-second delays keep reconnects on a LAN (and the tests) quick.
        seconds = cast(int, delay_seconds)
        client.reconnect_delay_set(seconds, seconds)

    def _next_delay(self, failures: int) -> float:
        cfg = self._cfg
        return reconnect_delay_seconds(
            failures, cfg.reconnect_min_seconds, cfg.reconnect_max_seconds, self._random
        )

    def _on_pre_connect(self, client: mqtt.Client, _userdata: Any) -> None:
        # paho calls this at the start of every connection attempt, and waits before each
        # retry for the delay set last (reconnect_delay_set with min = max, which also resets
        # paho's own doubling). Setting it here, assuming this attempt fails, gives exactly
        # one jittered, capped delay per failure; _on_connect resets it on success.
        with self._state_lock:
            self._attempt_open = True
            self._connect_attempts += 1
            self._attempts_since_connect += 1
            self._attempt_times.append(time.monotonic())
            failures = self._attempts_since_connect
        self._set_reconnect_delay(client, self._next_delay(failures))

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
                self._attempt_open = False
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
            self._attempt_open = False
            self._connects += 1
            self._attempts_since_connect = 0
            self._last_refusal = None
            self._reachable_warning_logged = False
            connects = self._connects
        # The wait after losing this connection starts again at the minimum.
        self._set_reconnect_delay(client, self._next_delay(0))
        if self._outbox is not None:
            self._outbox.rearm_warnings()  # a new outage logs its losses again
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
        # A clean session forgets subscriptions: ask again on every connection.
        for topic in self._subscriptions:
            client.subscribe(topic, qos=1)
        for hook in self._connect_hooks:
            hook()

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
            self._attempt_open = False
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

    def _on_connect_fail(self, client: mqtt.Client, _userdata: Any) -> None:
        # paho calls this from inside its `except OSError`, so the cause is still at hand.
        error = sys.exc_info()[1]
        reason = str(error) if error is not None else "unknown error"
        with self._state_lock:
            self._attempt_open = False
            first = not self._reachable_warning_logged
            self._reachable_warning_logged = True
            first_attempt_ever = self._connect_attempts == 1 and self._connects == 0
        if first_attempt_ever:
            # paho 2.x waits twice after a failed very first attempt (once in its connect
            # loop, once more in its reconnect loop), each time for the delay set: halve it.
            self._set_reconnect_delay(client, self._next_delay(1) / 2.0)
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
        if self._outbox is not None:
            self._feeder_wake.set()  # remove the acknowledged files promptly, refill paho
