"""MqttPublisher against a real mosquitto: status, Last Will, queueing through outages, errors."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.config import MqttConfig, TlsConfig
from monitor.errors import ConfigError
from monitor.publisher import MqttPublisher
from tests.support.broker import Broker, ReceivedMessage, Subscriber, read_retained

REPO_ROOT = Path(__file__).resolve().parents[1]
STATUS = "am-test/test/status"
DATA = "am-test/test/data"
WAIT_SECONDS = 20.0
SECRET = "s3cret-Pa55word"


def make_config(broker: Broker, **overrides: Any) -> MqttConfig:
    settings: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "device_id": "test",
        "keepalive_seconds": 5,
        "reconnect_min_seconds": 0.2,
        "reconnect_max_seconds": 1.0,
    }
    settings.update(overrides)
    return MqttConfig(**settings)


@pytest.fixture
def make_publisher() -> Iterator[Callable[..., MqttPublisher]]:
    """Make (not start) publishers; each is stopped at the end of the test."""
    publishers: list[MqttPublisher] = []

    def make(cfg: MqttConfig, status_topic: str = STATUS) -> MqttPublisher:
        publisher = MqttPublisher(cfg, status_topic)
        publishers.append(publisher)
        return publisher

    yield make
    for publisher in publishers:
        publisher.stop(timeout_seconds=1.0)


def wait_until(
    condition: Callable[[], bool], what: str, timeout_seconds: float = WAIT_SECONDS
) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_seconds} s waiting for {what}")
        time.sleep(0.02)


def unique_payloads(messages: list[ReceivedMessage], topic: str = DATA) -> set[str]:
    return {m.payload for m in messages if m.topic == topic}


def wait_for_payloads(subscriber: Subscriber, expected: set[str]) -> None:
    subscriber.wait_for(
        lambda msgs: expected <= unique_payloads(msgs),
        WAIT_SECONDS,
        what=f"{len(expected)} distinct payloads on {DATA}",
    )


def test_online_status_retained_and_messages_arrive(
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    subscriber = mqtt_subscriber(mosquitto, "am-test/#")
    publisher = make_publisher(make_config(mosquitto))
    publisher.start()
    mosquitto.wait_for_retained(STATUS, "online")
    assert publisher.connected

    expected = {f"m{i}" for i in range(20)}
    for payload in sorted(expected):
        publisher.publish(DATA, payload, qos=1, retain=False)
    publisher.publish("am-test/test/state", "ON", qos=1, retain=True)

    wait_for_payloads(subscriber, expected)
    subscriber.wait_for(
        lambda msgs: any(m.topic == "am-test/test/state" and m.payload == "ON" for m in msgs),
        what="the state message",
    )
    assert mosquitto.read_retained("am-test/test/state") == "ON"
    assert mosquitto.read_retained(DATA) is None  # published with retain=False
    wait_until(lambda: publisher.stats().acknowledged == 21, "21 acknowledgements")
    stats = publisher.stats()
    assert (stats.published, stats.dropped, stats.connects, stats.disconnects) == (21, 0, 1, 0)


_WILL_SCRIPT = """
import sys, time
from monitor.config import MqttConfig
from monitor.publisher import MqttPublisher
cfg = MqttConfig(host=sys.argv[1], port=int(sys.argv[2]), device_id="will-test",
                 keepalive_seconds=5, reconnect_min_seconds=0.2, reconnect_max_seconds=1.0)
publisher = MqttPublisher(cfg, sys.argv[3])
publisher.start()
time.sleep(600)
"""


def test_last_will_marks_a_killed_monitor_offline(mosquitto: Broker, tmp_path: Path) -> None:
    status = "am-test/will-test/status"
    stderr_path = tmp_path / "child.stderr"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with stderr_path.open("wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", _WILL_SCRIPT, mosquitto.host, str(mosquitto.port), status],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        try:
            mosquitto.wait_for_retained(status, "online")
        except AssertionError as err:
            raise AssertionError(f"{err}; child stderr: {stderr_path.read_text()}") from err
        assert child.poll() is None
        os.kill(child.pid, signal.SIGKILL)  # no DISCONNECT, no "offline" from the monitor itself
        child.wait(timeout=WAIT_SECONDS)
        # The broker publishes the Will when it sees the socket close (at the latest after
        # 1.5 x keepalive = 7.5 s).
        mosquitto.wait_for_retained(status, "offline")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_clean_stop_delivers_queued_messages_and_retains_offline(
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    subscriber = mqtt_subscriber(mosquitto, "am-test/#")
    publisher = make_publisher(make_config(mosquitto))
    publisher.start()
    mosquitto.wait_for_retained(STATUS, "online")

    expected = {f"last{i}" for i in range(50)}
    for payload in sorted(expected):
        publisher.publish(DATA, payload, qos=1, retain=False)
    publisher.stop(timeout_seconds=10.0)

    # stop() returned only after the broker acknowledged everything.
    stats = publisher.stats()
    assert (stats.published, stats.acknowledged, stats.disconnects) == (50, 50, 1)
    assert not publisher.connected
    wait_for_payloads(subscriber, expected)
    assert mosquitto.read_retained(STATUS) == "offline"
    # A clean DISCONNECT discards the Will, so "offline" arrives exactly once (ours).
    subscriber.wait_for(lambda msgs: "offline" in [m.payload for m in msgs if m.topic == STATUS])
    time.sleep(0.3)  # a wrongly fired Will would arrive right behind ours
    assert subscriber.payloads(STATUS).count("offline") == 1

    publisher.stop()  # a second stop is a no-op
    publisher.publish(DATA, "after-stop", qos=1, retain=False)  # dropped, not raised
    assert publisher.stats().dropped == 1


def test_stop_without_start_and_publish_before_start() -> None:
    cfg = MqttConfig(host="127.0.0.1", port=1, device_id="test")
    publisher = MqttPublisher(cfg, STATUS)
    with pytest.raises(RuntimeError, match="before start"):
        publisher.publish(DATA, "x", qos=1, retain=False)
    publisher.stop()
    publisher.stop()
    assert not publisher.connected


def test_messages_published_while_broker_absent_arrive_when_it_starts(
    broker_factory: Callable[..., Broker],
    mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    # A persistent session lets the broker queue messages for the subscriber across its
    # own restart, so the subscriber cannot miss messages by reconnecting late.
    broker = broker_factory(persistence=True)
    subscriber = mqtt_subscriber(broker, "am-test/#", client_id="sub-absent", clean_session=False)
    broker.stop()

    publisher = make_publisher(make_config(broker))
    publisher.start()  # must neither raise nor block without a broker
    expected = {f"early{i}" for i in range(60)}  # more than paho's 20 in-flight messages
    for payload in sorted(expected):
        publisher.publish(DATA, payload, qos=1, retain=False)
    publisher.publish(DATA, "qos0-lost", qos=0, retain=False)
    time.sleep(1.0)  # let several connection attempts fail
    stats = publisher.stats()
    assert not publisher.connected
    assert (stats.published, stats.dropped, stats.connects) == (60, 1, 0)

    broker.start()
    wait_for_payloads(subscriber, expected)
    broker.wait_for_retained(STATUS, "online")
    wait_until(lambda: publisher.stats().acknowledged == 60, "60 acknowledgements")
    assert publisher.stats().connects == 1
    assert "qos0-lost" not in unique_payloads(subscriber.messages())


def test_broker_restart_loses_nothing_and_restores_online(
    broker_factory: Callable[..., Broker],
    mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    broker = broker_factory(persistence=True)
    subscriber = mqtt_subscriber(broker, "am-test/#", client_id="sub-restart", clean_session=False)
    publisher = make_publisher(make_config(broker))
    publisher.start()
    broker.wait_for_retained(STATUS, "online")

    # Publish steadily from a worker thread across the whole outage, so messages also land
    # in the windows where the connection is dying or just coming back.
    sent: list[str] = []
    stop_worker = threading.Event()

    def worker() -> None:
        i = 0
        while not stop_worker.is_set():
            payload = f"steady{i}"
            publisher.publish(DATA, payload, qos=1, retain=False)
            sent.append(payload)
            i += 1
            time.sleep(0.005)

    thread = threading.Thread(target=worker, name="test-worker")
    thread.start()
    try:
        wait_until(lambda: len(sent) > 50, "the worker to publish")
        # As if a Will had fired during a network blip: "offline" is retained (and persisted)
        # when the broker goes down; only the publisher's next on_connect can undo it.
        broker.publish(STATUS, "offline", retain=True)
        broker.stop()
        wait_until(lambda: not publisher.connected, "the publisher to notice the outage")
        outage = {f"outage{i}" for i in range(40)}
        for payload in sorted(outage):
            publisher.publish(DATA, payload, qos=1, retain=False)
        count_at_restart = len(sent)
        wait_until(lambda: len(sent) > count_at_restart + 50, "publishing during the outage")
        broker.start()
        wait_until(lambda: publisher.connected, "the publisher to reconnect")
        count_after = len(sent)
        wait_until(lambda: len(sent) > count_after + 50, "publishing after the reconnect")
    finally:
        stop_worker.set()
        thread.join()

    wait_for_payloads(subscriber, set(sent) | outage)
    broker.wait_for_retained(STATUS, "online")
    stats = publisher.stats()
    assert (stats.connects, stats.disconnects, stats.dropped) == (2, 1, 0)
    assert stats.published == len(sent) + len(outage)


@pytest.mark.parametrize("handler", ["_on_connect", "_on_publish"])
def test_raising_callback_does_not_kill_the_network_thread(
    handler: str,
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    subscriber = mqtt_subscriber(mosquitto, "am-test/#")
    publisher = make_publisher(make_config(mosquitto))
    original = getattr(publisher, handler)
    calls: list[int] = []

    def raising(*args: Any) -> None:
        original(*args)
        calls.append(1)
        raise RuntimeError("boom from the test")

    # paho re-raises callback exceptions out of its network loop; unguarded, this would end
    # the thread at the first CONNACK / PUBACK and nothing after it would be delivered.
    setattr(publisher, handler, raising)
    publisher.start()
    mosquitto.wait_for_retained(STATUS, "online")
    expected = {f"after-raise{i}" for i in range(30)}
    for payload in sorted(expected):
        publisher.publish(DATA, payload, qos=1, retain=False)
    wait_for_payloads(subscriber, expected)
    wait_until(lambda: publisher.stats().acknowledged == 30, "30 acknowledgements")
    assert calls
    callback_name = handler.removeprefix("_")
    assert any(
        f"error in {callback_name} callback" in r.getMessage() and r.exc_info
        for r in caplog.records
    )


def test_missing_password_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-password"
    cfg = MqttConfig(host="127.0.0.1", device_id="test", username="u", password_file=missing)
    with pytest.raises(ConfigError) as info:
        MqttPublisher(cfg, STATUS)
    message = str(info.value)
    assert message.startswith("mqtt.password_file: cannot read ")
    assert str(missing) in message

    directory = tmp_path / "a-directory"
    directory.mkdir()
    cfg = MqttConfig(host="127.0.0.1", device_id="test", username="u", password_file=directory)
    with pytest.raises(ConfigError, match=r"^mqtt\.password_file: cannot read "):
        MqttPublisher(cfg, STATUS)

    empty = tmp_path / "empty"
    empty.write_text("\n")
    cfg = MqttConfig(host="127.0.0.1", device_id="test", username="u", password_file=empty)
    with pytest.raises(ConfigError, match=r"^mqtt\.password_file: .* is empty"):
        MqttPublisher(cfg, STATUS)


@pytest.fixture
def auth_broker(broker_factory: Callable[..., Broker], tmp_path: Path) -> Broker:
    """A broker that accepts only user "monitor" with password SECRET."""
    passwd = tmp_path / "mosquitto.passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), "monitor", SECRET],
        check=True,
        capture_output=True,
    )
    return broker_factory([f"password_file {passwd}", "allow_anonymous false"])


def test_password_authenticates_and_never_appears_in_logs(
    auth_broker: Broker,
    make_publisher: Callable[..., MqttPublisher],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # also paho's own log lines
    good = tmp_path / "good"
    good.write_text(SECRET + "\n")  # the trailing newline is not part of the password
    publisher = make_publisher(make_config(auth_broker, username="monitor", password_file=good))
    publisher.start()
    auth_broker.wait_for_retained(STATUS, "online", username="monitor", password=SECRET)

    bad = tmp_path / "bad"
    bad.write_text("wrong-" + SECRET)
    refused = make_publisher(
        make_config(auth_broker, username="monitor", password_file=bad, client_id="bad-one"),
        status_topic="am-test/bad/status",
    )
    refused.start()
    wait_until(
        lambda: any("refused the connection" in r.getMessage() for r in caplog.records),
        "the refusal to be logged",
    )
    time.sleep(1.5)  # several more refused attempts: logged at DEBUG, not again as ERROR
    refusals = [r for r in caplog.records if "refused the connection:" in r.getMessage()]
    assert len(refusals) == 1
    assert refusals[0].levelno == logging.ERROR
    assert "not authori" in refusals[0].getMessage().lower()
    assert not refused.connected
    assert refused.stats().connects == 0

    for text in [*(r.getMessage() for r in caplog.records), repr(publisher), repr(refused)]:
        assert SECRET not in text


def test_queue_bound_drops_new_messages_but_not_the_status(
    broker_factory: Callable[..., Broker],
    make_publisher: Callable[..., MqttPublisher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = broker_factory()
    broker.stop()
    publisher = make_publisher(make_config(broker, max_queued_messages=5))
    publisher.start()
    for i in range(8):
        publisher.publish(DATA, f"q{i}", qos=1, retain=False)
    stats = publisher.stats()
    assert (stats.published, stats.dropped) == (5, 3)
    assert len([r for r in caplog.records if "queue full" in r.getMessage()]) == 1

    broker.start()
    broker.wait_for_retained(STATUS, "online")  # the full queue did not block the status
    wait_until(lambda: publisher.stats().acknowledged == 5, "5 acknowledgements")
    publisher.publish(DATA, "room-again", qos=1, retain=False)
    assert publisher.stats().published == 6


def _make_certificates(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate valid for DNS name "localhost" only (not 127.0.0.1)."""
    if shutil.which("openssl") is None:
        reason = "openssl binary not found (needed to make test certificates)"
        if os.environ.get("AUDIO_MONITOR_ALLOW_SKIP") == "1":
            pytest.skip(reason)
        pytest.fail(reason)
    (directory / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
    for command in (
        "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.crt",
        "req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout srv.key -out srv.csr",
        "x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2"
        " -extfile ext.cnf -out srv.crt",
    ):
        subprocess.run(
            ["openssl", *command.split()], check=True, capture_output=True, cwd=directory
        )
    return {name: directory / name for name in ("ca.crt", "srv.crt", "srv.key")}


def test_tls_verifies_the_broker_certificate(
    broker_factory: Callable[..., Broker],
    make_publisher: Callable[..., MqttPublisher],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    certs = _make_certificates(tmp_path)
    broker = broker_factory(
        [f"cafile {certs['ca.crt']}", f"certfile {certs['srv.crt']}", f"keyfile {certs['srv.key']}"]
    )

    def tls_publisher(name: str, host: str, **tls: Any) -> MqttPublisher:
        cfg = make_config(broker, host=host, client_id=name, tls=TlsConfig(enabled=True, **tls))
        publisher = make_publisher(cfg, status_topic=f"am-test/{name}/status")
        publisher.start()
        return publisher

    trusted = tls_publisher("trusted", "localhost", ca_file=certs["ca.crt"])
    ca_file = certs["ca.crt"]
    wait_until(
        lambda: (
            read_retained("localhost", broker.port, "am-test/trusted/status", ca_file=ca_file)
            == "online"
        ),
        "the trusted TLS publisher to be online",
    )
    assert trusted.connected
    # Verification is on by default: the system CAs do not know our test CA, and the
    # certificate does not name 127.0.0.1, unless `insecure` skips the host name check.
    unknown_ca = tls_publisher("unknown-ca", "localhost")
    wrong_name = tls_publisher("wrong-name", "127.0.0.1", ca_file=certs["ca.crt"])
    insecure = tls_publisher("insecure", "127.0.0.1", ca_file=certs["ca.crt"], insecure=True)
    wait_until(lambda: insecure.connected, "the insecure TLS publisher to connect")
    wait_until(
        lambda: sum("certificate verify failed" in r.getMessage() for r in caplog.records) >= 2,
        "both verification failures to be logged",
    )
    assert not unknown_ca.connected
    assert not wrong_name.connected


def test_unreadable_tls_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.crt"
    cfg = MqttConfig(
        host="localhost", device_id="test", tls=TlsConfig(enabled=True, ca_file=missing)
    )
    with pytest.raises(ConfigError, match=r"^mqtt\.tls\.ca_file: cannot read .*missing-ca\.crt"):
        MqttPublisher(cfg, STATUS)
