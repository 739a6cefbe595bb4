"""MqttPublisher without a broker: config errors, passwords, TLS files, outbox folder, backoff."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from monitor.config import MqttConfig, OutboxConfig, TlsConfig
from monitor.config.secrets import resolve_password_path
from monitor.errors import ConfigError
from monitor.outputs.mqtt.publisher import MqttPublisher, reconnect_delay_seconds
from tests.support.mqtt import DATA, STATUS


def test_stop_without_start_and_publish_before_start() -> None:
    cfg = MqttConfig(host="127.0.0.1", port=1, device_id="test")
    publisher = MqttPublisher(cfg, STATUS)
    with pytest.raises(RuntimeError, match="before start"):
        publisher.publish(DATA, "x", qos=1, retain=False)
    publisher.stop()
    publisher.stop()
    assert not publisher.connected


def test_outbox_directory_problems_are_config_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = MqttConfig(
        host="127.0.0.1", device_id="test", outbox=OutboxConfig(directory=blocker / "outbox")
    )
    with pytest.raises(ConfigError, match=r"^mqtt\.outbox\.directory: cannot create "):
        MqttPublisher(cfg, STATUS)

    cfg = MqttConfig(host="127.0.0.1", device_id="test", outbox=OutboxConfig(directory=tmp_path))
    first = MqttPublisher(cfg, STATUS)
    try:
        assert first.outbox_directory == tmp_path / "audio-monitor-test"
        with pytest.raises(ConfigError, match=r"^mqtt\.outbox\.directory: .* in use"):
            MqttPublisher(cfg, STATUS)  # a second monitor with the same client id
    finally:
        first.stop()
    MqttPublisher(cfg, STATUS).stop()  # stop() released the directory


def test_outbox_defaults_to_the_systemd_state_directory(tmp_path: Path) -> None:
    cfg = MqttConfig(host="127.0.0.1", device_id="test")
    publisher = MqttPublisher(cfg, STATUS)
    try:
        # STATE_DIRECTORY is set by the autouse fixture in conftest.py, as systemd would.
        assert publisher.outbox_directory == tmp_path / "state" / "outbox" / "audio-monitor-test"
        assert publisher.outbox_directory.is_dir()
    finally:
        publisher.stop()


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


def test_unreadable_tls_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.crt"
    cfg = MqttConfig(
        host="localhost", device_id="test", tls=TlsConfig(enabled=True, ca_file=missing)
    )
    with pytest.raises(ConfigError, match=r"^mqtt\.tls\.ca_file: cannot read .*missing-ca\.crt"):
        MqttPublisher(cfg, STATUS)


def test_reconnect_delay_doubles_from_min_to_max_with_jitter() -> None:
    rng = random.Random(1234)
    for failures in range(0, 12):
        base = min(0.2 * 2 ** max(failures - 1, 0), 1.0)
        delays = [reconnect_delay_seconds(failures, 0.2, 1.0, rng) for _ in range(200)]
        assert all(base / 2 <= d <= base for d in delays), failures
        assert max(delays) - min(delays) > base / 4  # spread, not one fixed value
    assert reconnect_delay_seconds(10**6, 1.0, 60.0, rng) <= 60.0  # no overflow


def test_relative_password_file_without_credentials_directory_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_password_path(Path("pw")) == Path("pw")
    cfg = MqttConfig(host="127.0.0.1", device_id="test", username="u", password_file=Path("pw"))
    with pytest.raises(ConfigError, match=r"^mqtt\.password_file: cannot read pw: "):
        MqttPublisher(cfg, STATUS)


class DelayRecorder:
    """Stands in for paho's client where the publisher sets the wait before the next attempt."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def reconnect_delay_set(self, min_delay: float, max_delay: float) -> None:
        assert min_delay == max_delay  # one fixed wait: paho's own doubling stays off
        self.delays.append(min_delay)


def test_each_attempt_sets_one_jittered_capped_wait_and_a_connection_starts_over() -> None:
    cfg = MqttConfig(
        host="127.0.0.1",
        device_id="test",
        reconnect_min_seconds=0.2,
        reconnect_max_seconds=1.0,
        outbox=OutboxConfig(enabled=False),
    )
    publisher = MqttPublisher(cfg, STATUS)
    client = DelayRecorder()
    publisher._on_pre_connect(client, None)
    publisher._on_connect_fail(client, None)
    # paho waits twice after a failed very first attempt, so that wait is halved.
    assert 0.05 <= client.delays[-1] <= 0.1
    for _ in range(5):
        publisher._on_pre_connect(client, None)
    # After the n-th failure in a row: 50-100 % of min(0.2 * 2 ** (n - 1), 1.0).
    for base, delay in zip([0.4, 0.8, 1.0, 1.0, 1.0], client.delays[-5:], strict=True):
        assert base / 2 <= delay <= base
    assert publisher.stats().connect_attempts == 6
    assert len(publisher.connect_attempt_times()) == 6

    publisher._on_connect(client, None, None, SimpleNamespace(is_failure=False), None)
    assert publisher.stats().connects == 1
    assert 0.1 <= client.delays[-1] <= 0.2  # a connection lost later is retried quickly
    publisher._on_pre_connect(client, None)
    assert 0.1 <= client.delays[-1] <= 0.2  # and the doubling starts again from the minimum
    publisher.stop()
