"""Pytest fixtures around a real mosquitto broker and a collecting MQTT subscriber.

Fixtures (loaded for every test through ``pytest_plugins`` in tests/conftest.py):

``broker_factory(extra_config=(), persistence=False, start=True) -> Broker``
    A new mosquitto on a free loopback port, stopped at the end of the test.
    ``extra_config`` lines are appended after the ``listener`` line, so TLS options
    (``cafile``/``certfile``/``keyfile``) and ``password_file``/``allow_anonymous false``
    apply to that listener. ``persistence=True`` keeps retained messages and the sessions
    of ``clean_session=False`` clients across ``stop()``/``start()`` (outage tests).
``mosquitto -> Broker``
    ``broker_factory()`` with the defaults: anonymous, no persistence, already running.
``mqtt_subscriber(broker, topic_filter="#", **options) -> Subscriber``
    A started :class:`Subscriber` (already subscribed), closed at the end of the test.

Broker helpers: ``broker.read_retained(topic)`` (the retained payload or None, answered
definitely, no waiting for silence), ``broker.wait_for_retained(topic, payload)`` and
``broker.publish(topic, payload, retain=..., qos=...)``; all take ``username``, ``password``
and ``ca_file`` for brokers that want them.

A missing ``mosquitto`` binary fails the test, or skips it when AUDIO_MONITOR_ALLOW_SKIP=1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

LOOPBACK = "127.0.0.1"
DEFAULT_WAIT_SECONDS = 15.0


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary; /usr/sbin is often missing from a non-root PATH."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_mosquitto() -> str:
    """The mosquitto binary, or fail (skip only when AUDIO_MONITOR_ALLOW_SKIP=1)."""
    binary = find_mosquitto()
    if binary is None:
        reason = "mosquitto binary not found (apt-get install mosquitto)"
        if os.environ.get("AUDIO_MONITOR_ALLOW_SKIP") == "1":
            pytest.skip(reason)
        pytest.fail(reason)
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Broker:
    """One mosquitto process on a loopback port; start() again after stop() reuses the port."""

    host = LOOPBACK

    def __init__(
        self,
        workdir: Path,
        *,
        extra_config: Sequence[str] = (),
        persistence: bool = False,
        binary: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.extra_config = list(extra_config)
        self.persistence = persistence
        self.binary = binary or require_mosquitto()
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.port = 0  # chosen by the first start(); kept for every restart
        self._process: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> None:
        lines = [f"listener {self.port} {LOOPBACK}", *self.extra_config]
        if not any(line.split()[:1] == ["allow_anonymous"] for line in self.extra_config):
            lines.append("allow_anonymous true")
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
        else:
            lines.append("persistence false")
        if os.geteuid() == 0:
            # As root mosquitto drops to user "mosquitto", which cannot read our 0600 files
            # (password file, persistence db) in a root-owned temp dir.
            lines.append("user root")
        lines += ["log_dest stderr", "log_type all", "connection_messages true"]
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_seconds: float = DEFAULT_WAIT_SECONDS) -> None:
        """Start mosquitto and wait until its port accepts connections."""
        if self.running:
            raise RuntimeError("broker already running")
        first_start = self.port == 0
        attempts = 5 if first_start else 1
        # On a first start another process may grab the free port between the probe and
        # mosquitto's bind: try another one.
        for _ in range(attempts):
            if first_start:
                self.port = _free_port()
            self._write_config()
            if self._spawn_and_wait(timeout_seconds):
                return
        raise RuntimeError(
            f"mosquitto did not start on {self.host}:{self.port}; log tail:\n{self.log_tail()}"
        )

    def _spawn_and_wait(self, timeout_seconds: float) -> bool:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False
            if _port_accepts(self.host, self.port):
                return True
            time.sleep(0.02)
        self.kill()
        return False

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its persistence db) and wait; SIGKILL if it hangs."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL: the broker dies without closing sessions or saving anything."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def read_retained(
        self, topic: str, timeout_seconds: float = DEFAULT_WAIT_SECONDS, **client_options: Any
    ) -> str | None:
        """The retained payload of `topic` right now, or None; see read_retained()."""
        return read_retained(self.host, self.port, topic, timeout_seconds, **client_options)

    def publish(self, topic: str, payload: str, **options: Any) -> None:
        """Publish one message from a fresh client; see publish_once()."""
        publish_once(self.host, self.port, topic, payload, **options)

    def wait_for_retained(
        self,
        topic: str,
        expected: str,
        timeout_seconds: float = DEFAULT_WAIT_SECONDS,
        **client_options: Any,
    ) -> None:
        """Poll until the retained payload of `topic` is `expected`; AssertionError if not."""
        deadline = time.monotonic() + timeout_seconds
        value: str | None = None
        while True:
            remaining = deadline - time.monotonic()
            with contextlib.suppress(OSError, TimeoutError):
                value = self.read_retained(topic, max(remaining, 1.0), **client_options)
                if value == expected:
                    return
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"retained {topic!r} is {value!r}, expected {expected!r} "
                    f"after {timeout_seconds} s"
                )
            time.sleep(0.05)


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as a subscriber got it."""

    topic: str
    payload: str  # decoded as UTF-8 (invalid bytes replaced)
    retain: bool  # True for a retained message delivered on subscribe
    qos: int


def _new_client(
    client_id: str,
    *,
    clean_session: bool = True,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | Path | None = None,
) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=clean_session,
    )
    if username is not None:
        client.username_pw_set(username, password)
    if ca_file is not None:
        client.tls_set(ca_certs=str(ca_file))
    client.reconnect_delay_set(1, 1)
    return client


class Subscriber:
    """A paho client in the test that subscribes to `topic_filter` and collects messages.

    Thread-safe; use :meth:`wait_for` to poll for what a test expects. It reconnects on its
    own after a broker restart (and subscribes again). With ``clean_session=False`` and a
    broker started with ``persistence=True``, messages published while it is away (broker
    down or restarting) are queued by the broker and delivered when it is back.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic_filter: str = "#",
        *,
        qos: int = 1,
        client_id: str | None = None,
        clean_session: bool = True,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.topic_filter = topic_filter
        self.qos = qos
        self.client_id = client_id or f"test-sub-{uuid.uuid4().hex[:12]}"
        self._client = _new_client(
            self.client_id,
            clean_session=clean_session,
            username=username,
            password=password,
            ca_file=ca_file,
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._condition = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._subscribed = False

    def _on_connect(
        self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic_filter, qos=self.qos)

    def _on_subscribe(
        self, _client: Any, _userdata: Any, _mid: int, _codes: Any, _props: Any
    ) -> None:
        with self._condition:
            self._subscribed = True
            self._condition.notify_all()

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        received = ReceivedMessage(
            topic=message.topic,
            payload=message.payload.decode("utf-8", errors="replace"),
            retain=bool(message.retain),
            qos=int(message.qos),
        )
        with self._condition:
            self._messages.append(received)
            self._condition.notify_all()

    def start(self, timeout_seconds: float = DEFAULT_WAIT_SECONDS) -> Subscriber:
        """Connect, subscribe and wait for the SUBACK; returns self."""
        self._client.connect(self.host, self.port, keepalive=10)
        self._client.loop_start()
        with self._condition:
            if not self._condition.wait_for(lambda: self._subscribed, timeout_seconds):
                self.close()
                raise AssertionError(
                    f"subscriber {self.client_id} not subscribed to {self.topic_filter!r} "
                    f"on {self.host}:{self.port} after {timeout_seconds} s"
                )
        return self

    def close(self) -> None:
        """Disconnect and stop the network thread; safe to call twice."""
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()

    def messages(self, topic: str | None = None) -> list[ReceivedMessage]:
        """A snapshot of everything received so far (only `topic`'s if given)."""
        with self._condition:
            return [m for m in self._messages if topic is None or m.topic == topic]

    def payloads(self, topic: str) -> list[str]:
        return [m.payload for m in self.messages(topic)]

    def clear(self) -> None:
        with self._condition:
            self._messages.clear()

    def wait_for(
        self,
        predicate: Callable[[list[ReceivedMessage]], bool],
        timeout_seconds: float = DEFAULT_WAIT_SECONDS,
        what: str = "",
    ) -> list[ReceivedMessage]:
        """Wait until predicate(messages so far) is true; returns the messages.

        Raises AssertionError (naming `what` and the last messages) on timeout.
        """
        with self._condition:
            if self._condition.wait_for(lambda: predicate(list(self._messages)), timeout_seconds):
                return list(self._messages)
            tail = self._messages[-10:]
            count = len(self._messages)
        raise AssertionError(
            f"timed out after {timeout_seconds} s waiting for {what or 'predicate'}; "
            f"{count} messages received, last ones: {tail}"
        )


def read_retained(
    host: str,
    port: int,
    topic: str,
    timeout_seconds: float = DEFAULT_WAIT_SECONDS,
    **client_options: Any,
) -> str | None:
    """The retained payload of `topic` (exact name), or None when nothing is retained.

    A fresh client subscribes to `topic` and to a private sentinel topic, then publishes to
    the sentinel: the broker queues a retained message before that echo, so the answer is
    definite as soon as the echo arrives (no waiting for "nothing came").
    `client_options`: username, password, ca_file.
    """
    sentinel = f"test-support/sentinel/{uuid.uuid4().hex}"
    client = _new_client(f"test-retained-{uuid.uuid4().hex[:12]}", **client_options)
    found: list[str] = []
    done = threading.Event()

    def on_subscribe(c: Any, _u: Any, _mid: int, _codes: Any, _props: Any) -> None:
        c.publish(sentinel, b"x", qos=1)

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        if message.topic == sentinel:
            done.set()
        elif message.topic == topic and message.retain:
            found.append(message.payload.decode("utf-8", errors="replace"))

    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port, keepalive=10)
    client.loop_start()
    try:
        client.subscribe([(topic, 1), (sentinel, 1)])
        if not done.wait(timeout_seconds):
            raise TimeoutError(f"no answer from {host}:{port} after {timeout_seconds} s")
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()
    return found[-1] if found else None


def publish_once(
    host: str,
    port: int,
    topic: str,
    payload: str,
    *,
    qos: int = 1,
    retain: bool = False,
    timeout_seconds: float = DEFAULT_WAIT_SECONDS,
    **client_options: Any,
) -> None:
    """Publish one message from a fresh client and wait until the broker has it."""
    client = _new_client(f"test-pub-{uuid.uuid4().hex[:12]}", **client_options)
    client.connect(host, port, keepalive=10)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout_seconds)
        if not info.is_published():
            raise TimeoutError(f"{host}:{port} did not take {topic!r} in {timeout_seconds} s")
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()


@pytest.fixture
def broker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Broker]]:
    """Make brokers; every broker made is stopped at the end of the test."""
    binary = require_mosquitto()
    brokers: list[Broker] = []

    def make(
        extra_config: Sequence[str] = (), *, persistence: bool = False, start: bool = True
    ) -> Broker:
        broker = Broker(
            tmp_path_factory.mktemp("mosquitto"),
            extra_config=extra_config,
            persistence=persistence,
            binary=binary,
        )
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mosquitto(broker_factory: Callable[..., Broker]) -> Broker:
    """A running anonymous broker without persistence, stopped after the test."""
    return broker_factory()


@pytest.fixture
def mqtt_subscriber() -> Iterator[Callable[..., Subscriber]]:
    """Make started subscribers: mqtt_subscriber(broker, topic_filter, **Subscriber options)."""
    subscribers: list[Subscriber] = []

    def make(broker: Broker, topic_filter: str = "#", **options: Any) -> Subscriber:
        subscriber = Subscriber(broker.host, broker.port, topic_filter, **options)
        subscribers.append(subscriber)
        return subscriber.start()

    yield make
    for subscriber in subscribers:
        subscriber.close()
