"""MqttPublisher against a real mosquitto: status, Last Will, outages, outbox, backoff, TLS."""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.config import MqttConfig, OutboxConfig, TlsConfig
from monitor.config.secrets import resolve_password_path
from monitor.errors import ConfigError
from monitor.outputs.mqtt.publisher import MqttPublisher
from tests.support.broker import Broker, ReceivedMessage, Subscriber, read_retained
from tests.support.child_publisher import CHILD_STATUS, ChildPublisher, child_settings
from tests.support.mqtt import DATA, STATUS, make_config
from tests.support.slow_link import slow_link
from tests.support.waiting import WAIT_SECONDS, wait_until

SECRET = "s3cret-Pa55word"
PASSWD_FILE = "mosquitto.passwd"
log = logging.getLogger(__name__)


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


@pytest.fixture
def spawn_child(tmp_path: Path) -> Iterator[Callable[..., ChildPublisher]]:
    """Start ChildPublishers with MqttConfig settings; every one is killed after the test."""
    children: list[ChildPublisher] = []

    def spawn(settings: dict[str, Any]) -> ChildPublisher:
        child = ChildPublisher(settings, tmp_path / f"child-{len(children)}.stderr")
        children.append(child)
        return child

    yield spawn
    for child in children:
        child.close()


@pytest.fixture
def persistent_broker(
    broker_factory: Callable[..., Broker], mqtt_subscriber: Callable[..., Subscriber]
) -> tuple[Broker, Subscriber]:
    """A broker that keeps sessions across its restarts, and a subscriber to am-test/# with
    such a session: the broker queues what it misses while reconnecting late."""
    broker = broker_factory(persistence=True)
    subscriber = mqtt_subscriber(broker, "am-test/#", client_id="sub", clean_session=False)
    return broker, subscriber


def received_ids(subscriber: Subscriber) -> set[str]:
    return {json.loads(m.payload)["id"] for m in subscriber.messages(DATA)}


def wait_for_ids(subscriber: Subscriber, expected: set[str]) -> None:
    subscriber.wait_for(
        lambda _msgs: expected <= received_ids(subscriber),
        WAIT_SECONDS,
        what=f"{len(expected)} detection ids on {DATA}",
    )


def message_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.msg"))


@pytest.fixture
def online_child(
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
    spawn_child: Callable[..., ChildPublisher],
    tmp_path: Path,
) -> tuple[Subscriber, ChildPublisher]:
    """A child publisher online at `mosquitto`, and a subscriber to its status topic."""
    subscriber = mqtt_subscriber(mosquitto, CHILD_STATUS)
    child = spawn_child(child_settings(mosquitto, tmp_path / "outbox"))
    mosquitto.wait_for_retained(CHILD_STATUS, "online")
    return subscriber, child


def seconds_until_the_will(subscriber: Subscriber, child: ChildPublisher, signum: int) -> float:
    """Send `signum` to the child; the seconds until its Last Will ("offline") arrives."""
    subscriber.clear()
    sent_at = time.monotonic()
    child.process.send_signal(signum)
    subscriber.wait_for(
        lambda msgs: "offline" in [m.payload for m in msgs],
        WAIT_SECONDS,
        what="the Last Will",
    )
    return time.monotonic() - sent_at


@pytest.mark.slow
def test_last_will_marks_a_killed_monitor_offline_within_the_keepalive(
    mosquitto: Broker, online_child: tuple[Subscriber, ChildPublisher]
) -> None:
    subscriber, child = online_child
    # No DISCONNECT, no "offline" from the monitor: the broker must fire the Will.
    seconds_to_offline = seconds_until_the_will(subscriber, child, signal.SIGKILL)
    log.info("kill -9 -> offline in %.2f s", seconds_to_offline)
    assert seconds_to_offline <= 1.5 * 5 + 2.0
    assert mosquitto.read_retained(CHILD_STATUS) == "offline"


@pytest.mark.slow
def test_frozen_monitor_goes_offline_within_one_and_a_half_keepalives_then_online_again(
    mosquitto: Broker, online_child: tuple[Subscriber, ChildPublisher]
) -> None:
    # SIGSTOP keeps the TCP connection open but silent, like a hung host or a dead Wi-Fi
    # link: only the keepalive can tell the broker that the monitor is gone.
    subscriber, child = online_child
    try:
        seconds_to_offline = seconds_until_the_will(subscriber, child, signal.SIGSTOP)
    finally:
        child.process.send_signal(signal.SIGCONT)
    log.info("SIGSTOP -> offline in %.2f s (keepalive 5 s)", seconds_to_offline)
    # mosquitto 2.0 runs its keepalive check at most every 6 s (keepalive__check:
    # `last_keepalive_check + 5 < now`, whole seconds), hence 6 s more slack than for kill -9.
    # Measured here: 9-12 s for keepalive 5, 15-18 s for keepalive 10.
    assert seconds_to_offline <= 1.5 * 5 + 2.0 + 6.0
    # Thawed, the monitor notices the dropped connection, reconnects and says "online" again.
    subscriber.wait_for(
        lambda msgs: [m.payload for m in msgs][-1:] == ["online"],
        WAIT_SECONDS,
        what="online after the thaw",
    )
    mosquitto.wait_for_retained(CHILD_STATUS, "online")


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


def test_stop_while_connecting_still_says_offline_and_delivers_what_was_queued(
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    # A service that fails at once (a source that refuses to start) stops its publisher
    # while the first connection is still under way: what it queued must not be lost.
    subscriber = mqtt_subscriber(mosquitto, "am-test/#")
    with slow_link(mosquitto.port, delay_seconds=0.5) as link:
        publisher = make_publisher(make_config(mosquitto, port=link.port))
        publisher.start()
        publisher.publish(DATA, "early", qos=1, retain=False)
        publisher.publish("am-test/test/state", "ON", qos=1, retain=True)
        assert not publisher.connected
        publisher.stop(timeout_seconds=10.0)
    stats = publisher.stats()
    assert (stats.published, stats.acknowledged, stats.connects) == (2, 2, 1)
    assert mosquitto.read_retained(STATUS) == "offline"
    assert mosquitto.read_retained("am-test/test/state") == "ON"
    wait_for_payloads(subscriber, {"early"})
    # Connected while stopping: "online" is never said.
    assert "online" not in subscriber.payloads(STATUS)


def test_stop_while_connecting_is_bounded_by_its_timeout(
    mosquitto: Broker, make_publisher: Callable[..., MqttPublisher]
) -> None:
    with slow_link(mosquitto.port, delay_seconds=30.0) as link:
        publisher = make_publisher(make_config(mosquitto, port=link.port))
        publisher.start()
        began = time.monotonic()
        publisher.stop(timeout_seconds=1.0)
        stop_seconds = time.monotonic() - began
    log.info("stop(timeout_seconds=1.0) on a link that never answers took %.2f s", stop_seconds)
    assert stop_seconds <= 1.0 + 0.5
    assert publisher.stats().connects == 0


@pytest.mark.slow
def test_messages_published_while_broker_absent_arrive_when_it_starts(
    persistent_broker: tuple[Broker, Subscriber],
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    # A persistent session lets the broker queue messages for the subscriber across its
    # own restart, so the subscriber cannot miss messages by reconnecting late.
    broker, subscriber = persistent_broker
    broker.stop()

    publisher = make_publisher(make_config(broker))
    publisher.start()  # must neither raise nor block without a broker
    expected = {f"early{i}" for i in range(60)}  # more than paho's 20 in-flight messages
    for payload in sorted(expected):
        publisher.publish(DATA, payload, qos=1, retain=False)
    publisher.publish(DATA, "qos0-lost", qos=0, retain=False)
    wait_until(lambda: len(publisher.connect_attempt_times()) >= 3, "3 failed connection attempts")
    stats = publisher.stats()
    assert not publisher.connected
    assert (stats.published, stats.dropped, stats.connects) == (60, 1, 0)

    broker.start()
    wait_for_payloads(subscriber, expected)
    broker.wait_for_retained(STATUS, "online")
    wait_until(lambda: publisher.stats().acknowledged == 60, "60 acknowledgements")
    assert publisher.stats().connects == 1
    assert "qos0-lost" not in unique_payloads(subscriber.messages())


@pytest.mark.slow
def test_broker_restart_loses_nothing_and_restores_online(
    persistent_broker: tuple[Broker, Subscriber],
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    broker, subscriber = persistent_broker
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
    # Every detection went through the outbox; acknowledged, each file was removed again.
    wait_until(lambda: publisher.stats().outbox_pending == 0, "the outbox to empty")
    stats = publisher.stats()
    assert (stats.connects, stats.disconnects, stats.dropped) == (2, 1, 0)
    assert stats.published == len(sent) + len(outage)
    log.info(
        "broker restart: %d ids sent, %d distinct received (%d messages)",
        len(sent) + len(outage),
        len(unique_payloads(subscriber.messages())),
        len(subscriber.messages(DATA)),
    )


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_monitor_restarted_during_an_outage_delivers_every_detection(
    how: str,
    persistent_broker: tuple[Broker, Subscriber],
    spawn_child: Callable[..., ChildPublisher],
    tmp_path: Path,
) -> None:
    broker, subscriber = persistent_broker
    outbox = tmp_path / "outbox"
    settings = child_settings(broker, outbox)
    first = spawn_child(settings)
    broker.wait_for_retained(CHILD_STATUS, "online")
    first.publish("before", 20)
    wait_for_ids(subscriber, {f"before{i}" for i in range(20)})

    broker.stop()
    wait_until(lambda: not first.stats()["connected"], "the child to notice the outage")
    first.publish("during", 30)  # each one is on disk when publish() returns
    assert first.stats()["outbox_pending"] >= 30
    if how == "SIGKILL":
        first.process.send_signal(signal.SIGKILL)
    else:
        first.process.send_signal(signal.SIGTERM)
        stop_seconds = float(first.expect("stopped").split()[1])
        assert stop_seconds <= 2.0 + 0.5  # stop(timeout_seconds=2.0) with the broker down
    first.process.wait(timeout=WAIT_SECONDS)
    assert first.process.returncode == (-signal.SIGKILL if how == "SIGKILL" else 0)
    assert len(message_files(outbox)) >= 30

    broker.start()
    second = spawn_child(settings)  # same client id, same outbox directory
    second.publish("after", 10)
    expected = (
        {f"before{i}" for i in range(20)}
        | {f"during{i}" for i in range(30)}
        | {f"after{i}" for i in range(10)}
    )
    wait_for_ids(subscriber, expected)
    wait_until(lambda: second.stats()["outbox_pending"] == 0, "the outbox to empty")
    stats = second.stats()
    assert stats["outbox_restored"] >= 30
    assert (stats["outbox_dropped"], stats["outbox_corrupt"], stats["dropped"]) == (0, 0, 0)
    log.info(
        "%s: %d ids sent, %d distinct received (%d messages), %d restored from the outbox",
        how,
        len(expected),
        len(received_ids(subscriber)),
        len(subscriber.messages(DATA)),
        stats["outbox_restored"],
    )
    second.process.send_signal(signal.SIGTERM)
    second.expect("stopped")
    assert second.process.wait(timeout=WAIT_SECONDS) == 0
    assert message_files(outbox) == []
    assert broker.read_retained(CHILD_STATUS) == "offline"


@pytest.mark.slow
def test_stop_with_the_broker_down_keeps_the_outbox_for_the_next_start(
    persistent_broker: tuple[Broker, Subscriber],
    make_publisher: Callable[..., MqttPublisher],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, subscriber = persistent_broker
    broker.stop()
    cfg = make_config(broker, outbox=OutboxConfig(directory=tmp_path / "outbox"))
    first = make_publisher(cfg)
    first.start()
    expected = {f"kept{i}" for i in range(25)}
    for payload in sorted(expected):
        first.publish(DATA, payload, qos=1, retain=False)
    began = time.monotonic()
    first.stop(timeout_seconds=2.0)
    stop_seconds = time.monotonic() - began
    log.info("stop() with the broker down took %.2f s", stop_seconds)
    assert stop_seconds <= 2.0 + 0.5
    assert first.stats().outbox_pending == 25
    directory = first.outbox_directory
    assert directory is not None and len(message_files(directory)) == 25
    # A torn entry (e.g. a disk that lied about fsync) must not stop the next start.
    torn = directory / f"000000000000-{round(time.time() * 1000)}.msg"
    torn.write_text('{"v":1,"topic":"am-te')

    broker.start()
    second = make_publisher(cfg)
    assert second.stats().outbox_restored == 26
    second.start()
    wait_for_payloads(subscriber, expected)
    wait_until(lambda: second.stats().outbox_pending == 0, "the outbox to empty")
    stats = second.stats()
    assert (stats.acknowledged, stats.published, stats.outbox_corrupt) == (25, 0, 1)
    assert message_files(directory) == []
    assert len([r for r in caplog.records if "unreadable entry" in r.getMessage()]) == 1


@pytest.mark.slow
def test_outbox_holds_what_does_not_fit_in_memory_and_sends_it_in_order(
    persistent_broker: tuple[Broker, Subscriber],
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    broker, subscriber = persistent_broker
    broker.stop()
    publisher = make_publisher(make_config(broker, max_queued_messages=5))
    publisher.start()
    sent = [f"spill{i:02d}" for i in range(40)]
    for payload in sent:
        publisher.publish(DATA, payload, qos=1, retain=False)
    stats = publisher.stats()
    # Memory holds 5; the other 35 wait on disk instead of being dropped.
    assert (stats.published, stats.dropped, stats.outbox_pending) == (40, 0, 40)

    broker.start()
    wait_for_payloads(subscriber, set(sent))
    wait_until(lambda: publisher.stats().outbox_pending == 0, "the outbox to empty")
    assert publisher.stats().acknowledged == 40
    first_seen: list[str] = []
    for payload in subscriber.payloads(DATA):
        if payload not in first_seen:
            first_seen.append(payload)
    assert first_seen == sent


def test_full_outbox_drops_the_oldest_and_logs_once_per_outage(
    broker_factory: Callable[..., Broker],
    make_publisher: Callable[..., MqttPublisher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = broker_factory()
    broker.stop()
    publisher = make_publisher(make_config(broker, outbox=OutboxConfig(max_messages=10)))
    publisher.start()
    for i in range(25):
        publisher.publish(DATA, f"first{i}", qos=1, retain=False)
    stats = publisher.stats()
    assert (stats.published, stats.outbox_dropped, stats.outbox_pending) == (25, 15, 10)

    def full_warnings() -> int:
        return len([r for r in caplog.records if "is full" in r.getMessage()])

    assert full_warnings() == 1
    broker.start()
    wait_until(lambda: publisher.connected, "the publisher to connect")
    # The 15 dropped from disk were still in memory, so this run delivers them anyway.
    wait_until(lambda: publisher.stats().acknowledged == 25, "25 acknowledgements")
    assert publisher.stats().outbox_pending == 0

    broker.stop()
    wait_until(lambda: not publisher.connected, "the second outage")
    for i in range(25):
        publisher.publish(DATA, f"second{i}", qos=1, retain=False)
    assert publisher.stats().outbox_dropped == 30
    assert full_warnings() == 2  # one line per outage, not one per dropped message


@pytest.mark.parametrize("handler", ["_on_connect", "_on_publish", "_on_pre_connect"])
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


def add_broker_user(passwd: Path, username: str, password: str) -> None:
    """Add (or change) a user in a mosquitto password file, creating the file if need be."""
    create = [] if passwd.exists() else ["-c"]
    subprocess.run(
        ["mosquitto_passwd", "-b", *create, str(passwd), username, password],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def auth_broker(broker_factory: Callable[..., Broker], tmp_path: Path) -> Broker:
    """A broker that accepts only user "monitor" with password SECRET (in PASSWD_FILE)."""
    passwd = tmp_path / PASSWD_FILE
    add_broker_user(passwd, "monitor", SECRET)
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
    # Two more refused attempts: logged at DEBUG, not again as ERROR. An attempt starts only
    # after the previous one's refusal was handled.
    attempts = len(refused.connect_attempt_times())
    wait_until(
        lambda: len(refused.connect_attempt_times()) >= attempts + 2, "more refused attempts"
    )
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
    # Without the outbox, memory is all there is: new messages are refused when it is full.
    cfg = make_config(broker, max_queued_messages=5, outbox=OutboxConfig(enabled=False))
    publisher = make_publisher(cfg)
    assert publisher.outbox_directory is None
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


@pytest.mark.slow
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


def attempt_gaps(publisher: MqttPublisher) -> list[float]:
    times = publisher.connect_attempt_times()
    return [later - earlier for earlier, later in itertools.pairwise(times)]


@pytest.mark.slow
def test_absent_broker_is_retried_with_growing_jittered_capped_delays(
    persistent_broker: tuple[Broker, Subscriber],
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    broker, subscriber = persistent_broker
    broker.stop()
    min_seconds, max_seconds = 0.1, 0.8
    cfg = make_config(broker, reconnect_min_seconds=min_seconds, reconnect_max_seconds=max_seconds)
    publisher = make_publisher(cfg)
    publisher.start()  # the first connect fails: paho keeps retrying
    publisher.publish(DATA, "while-absent", qos=1, retain=False)
    wait_until(lambda: len(publisher.connect_attempt_times()) >= 11, "11 connection attempts")
    gaps = attempt_gaps(publisher)[:10]
    log.info("gaps between attempts: %s", ", ".join(f"{g:.3f}" for g in gaps))
    # Expected waits: 50-100 % of 0.1, 0.2, 0.4, then of the 0.8 cap (plus scheduling noise).
    assert gaps[0] <= min_seconds + 0.15
    capped = gaps[4:]
    assert min(capped) >= max_seconds / 2 - 0.02  # grown to the cap's range, never hammering
    assert max(gaps) <= max_seconds + 0.3  # capped
    assert statistics.mean(gaps[:2]) < statistics.mean(capped) - 0.2
    assert max(capped) - min(capped) > 0.02  # jittered, not paho's fixed doubling
    assert publisher.stats().connect_attempts >= 11

    broker.start()
    wait_for_payloads(subscriber, {"while-absent"})
    broker.wait_for_retained(STATUS, "online")


@pytest.mark.slow
def test_wrong_password_is_reported_once_and_retried_with_backoff_until_fixed(
    auth_broker: Broker,
    make_publisher: Callable[..., MqttPublisher],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = auth_broker
    password_file = tmp_path / "late-password"
    password_file.write_text("late-" + SECRET + "\n")
    cfg = make_config(broker, username="late", password_file=password_file)
    publisher = make_publisher(cfg)
    publisher.start()
    publisher.publish(DATA, "while-refused", qos=1, retain=False)
    wait_until(lambda: len(publisher.connect_attempt_times()) >= 5, "5 refused attempts")
    gaps = attempt_gaps(publisher)[:4]
    log.info("refused attempts spaced by: %s", ", ".join(f"{g:.3f}" for g in gaps))
    # min 0.2 s, max 1.0 s: waits of 50-100 % of 0.2, 0.4, 0.8, 1.0.
    assert all(gap >= 0.09 for gap in gaps)
    assert gaps[3] >= 0.5 - 0.02
    assert publisher.stats().connects == 0
    refusals = [r for r in caplog.records if "refused the connection:" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.ERROR

    # The administrator adds the user; the broker restarts with the fixed password file.
    add_broker_user(tmp_path / PASSWD_FILE, "late", "late-" + SECRET)
    broker.stop()
    broker.start()
    wait_until(lambda: publisher.connected, "the publisher to connect after the fix")
    broker.wait_for_retained(STATUS, "online", username="monitor", password=SECRET)
    wait_until(lambda: publisher.stats().acknowledged == 1, "the queued detection")
    refusals = [r for r in caplog.records if "refused the connection:" in r.getMessage()]
    assert len(refusals) == 1
    assert not any("late-" + SECRET in r.getMessage() for r in caplog.records)


def test_relative_password_file_is_read_from_the_systemd_credentials_directory(
    auth_broker: Broker,
    make_publisher: Callable[..., MqttPublisher],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt-password").write_text(SECRET)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    cfg = make_config(auth_broker, username="monitor", password_file=Path("mqtt-password"))
    publisher = make_publisher(cfg)
    publisher.start()
    auth_broker.wait_for_retained(STATUS, "online", username="monitor", password=SECRET)

    missing = make_config(auth_broker, username="monitor", password_file=Path("other"))
    with pytest.raises(ConfigError) as info:
        MqttPublisher(missing, STATUS)
    assert str(info.value).startswith(f"mqtt.password_file: cannot read {credentials / 'other'}:")
    # An absolute path is taken as it is, credentials directory or not.
    assert resolve_password_path(tmp_path / "abs") == tmp_path / "abs"
