"""The on-disk outbox alone: durability across reopen, bounds, age, corrupt entries, locking."""

from __future__ import annotations

import json
import logging
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.config import OutboxConfig
from monitor.errors import ConfigError
from monitor.outputs.mqtt.outbox import Outbox, namespace_for, resolve_outbox_root

TOPIC = "am/dev/pets/detection"


class FakeClock:
    """Wall-clock seconds the test sets by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def open_outbox(tmp_path: Path) -> Iterator[Any]:
    """Open outboxes (default: tmp_path/box, generous bounds); all closed after the test."""
    opened: list[Outbox] = []

    def make(directory: Path | None = None, **options: Any) -> Outbox:
        settings: dict[str, Any] = {
            "max_messages": 1000,
            "max_bytes": 10_000_000,
            "max_age_seconds": 3600.0,
        }
        settings.update(options)
        box = Outbox(directory or tmp_path / "box", **settings)
        opened.append(box)
        return box

    yield make
    for box in opened:
        box.close()


def message_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".msg"))


def test_messages_survive_reopen_in_order(open_outbox: Any, tmp_path: Path) -> None:
    box = open_outbox()
    seqs = [box.add(TOPIC, json.dumps({"id": f"m{i}"}), 1) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    box.remove(2)  # acknowledged
    box.remove(99)  # unknown: ignored
    assert box.pending() == [1, 3, 4, 5]
    assert len(message_files(tmp_path / "box")) == 4
    box.close()
    box.close()  # idempotent

    again = open_outbox()
    assert again.pending() == [1, 3, 4, 5]
    assert again.stats().restored == 4
    first = again.read(1)
    assert first is not None
    assert (first.seq, first.topic, first.qos) == (1, TOPIC, 1)
    assert json.loads(first.payload) == {"id": "m0"}
    assert again.add(TOPIC, "next", 2) == 6  # numbering continues after the survivors
    message = again.read(6)
    assert message is not None and (message.payload, message.qos) == ("next", 2)


def test_files_are_private_and_writes_leave_no_temporaries(
    open_outbox: Any, tmp_path: Path
) -> None:
    directory = tmp_path / "deep" / "state" / "box"
    box = open_outbox(directory)
    for path in (directory, directory.parent, directory.parent.parent):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    box.add(TOPIC, "x" * 100, 1)
    names = [p.name for p in directory.iterdir()]
    assert len(names) == 1 and names[0].endswith(".msg")
    assert stat.S_IMODE((directory / names[0]).stat().st_mode) == 0o600
    box.close()

    # A write interrupted before its rename leaves a temporary file; the next open removes it.
    (directory / ".7.tmp").write_text('{"v":1,"topic":')
    (directory / "README").write_text("not ours: left alone")
    box = open_outbox(directory)
    assert not (directory / ".7.tmp").exists()
    assert (directory / "README").exists()
    assert box.pending() == [1]


def test_max_messages_drops_the_oldest_counted_and_logged_once(
    open_outbox: Any, caplog: pytest.LogCaptureFixture
) -> None:
    box = open_outbox(max_messages=10)
    for i in range(25):
        box.add(TOPIC, f"m{i}", 1)
    assert box.pending() == list(range(16, 26))  # the 15 oldest went
    stats = box.stats()
    assert (stats.pending, stats.dropped_full, stats.written) == (10, 15, 25)
    assert len([r for r in caplog.records if "is full" in r.getMessage()]) == 1

    box.rearm_warnings()  # a new outage: its losses are logged again, once
    for i in range(3):
        box.add(TOPIC, f"n{i}", 1)
    assert box.stats().dropped_full == 18
    assert len([r for r in caplog.records if "is full" in r.getMessage()]) == 2


def test_max_bytes_drops_the_oldest(open_outbox: Any) -> None:
    probe = open_outbox()
    probe.add(TOPIC, "p" * 300, 1)
    entry_bytes = probe.stats().pending_bytes  # what one entry costs on this file system
    probe.close()

    box = open_outbox(max_bytes=5 * entry_bytes)
    for _ in range(12):
        box.add(TOPIC, "p" * 300, 1)
    pending = box.pending()
    assert len(pending) == 5
    assert pending == list(range(pending[0], pending[0] + 5))  # the newest, contiguous
    assert pending[-1] == 13  # 1 from the probe run, then 12 more
    assert box.stats().dropped_full == 12 + 1 - 5
    assert box.stats().pending_bytes <= 5 * entry_bytes


def test_age_limit_while_running_and_at_open(
    open_outbox: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    box = open_outbox(max_age_seconds=100.0, clock=clock)
    for i in range(3):
        box.add(TOPIC, f"old{i}", 1)
    clock.now += 50
    box.add(TOPIC, "young", 1)
    clock.now += 60  # the first three are 110 s old, the fourth 60 s
    assert box.read(1) is None  # expired on read: dropped, not returned
    assert box.expire() == 2
    assert box.pending() == [4]
    assert box.stats().dropped_expired == 3
    assert len(message_files(tmp_path / "box")) == 1
    box.close()

    caplog.clear()
    clock.now += 1000
    again = open_outbox(max_age_seconds=100.0, clock=clock)
    assert again.pending() == []
    assert (again.stats().restored, again.stats().dropped_expired) == (0, 1)
    assert len([r for r in caplog.records if "older than" in r.getMessage()]) == 1
    assert message_files(tmp_path / "box") == []


def test_clock_set_back_does_not_expire_messages(open_outbox: Any) -> None:
    clock = FakeClock()
    box = open_outbox(max_age_seconds=100.0, clock=clock)
    box.add(TOPIC, "m", 1)
    clock.now -= 10_000  # e.g. an RTC-less board before NTP: the entry looks "from the future"
    assert box.expire() == 0
    assert box.read(1) is not None


def test_corrupt_entries_are_removed_logged_once_and_never_fatal(
    open_outbox: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "box"
    box = open_outbox(directory)
    box.add(TOPIC, "good-1", 1)
    box.close()
    ms = 1_700_000_000_000
    (directory / f"000000000002-{ms}.msg").write_bytes(b'{"v":1,"topic":"t","qo')  # torn
    (directory / f"000000000003-{ms}.msg").write_bytes(b"\xff\xfe binary")
    (directory / f"000000000004-{ms}.msg").write_text(json.dumps(["not", "an", "object"]))
    (directory / f"000000000005-{ms}.msg").write_text(json.dumps({"v": 1, "topic": "t"}))
    (directory / f"000000000006-{ms}.msg").mkdir()  # not even a file
    caplog.set_level(logging.DEBUG, logger="monitor.outputs.mqtt.outbox")

    box = open_outbox(directory, max_age_seconds=1e12)
    assert box.pending() == [1, 2, 3, 4, 5, 6]
    assert box.add(TOPIC, "good-7", 1) == 7
    read = [box.read(seq) for seq in box.pending()]
    assert [m.payload for m in read if m is not None] == ["good-1", "good-7"]
    assert box.stats().dropped_corrupt == 5
    assert box.pending() == [1, 7]
    unreadable = [r for r in caplog.records if "unreadable entry" in r.getMessage()]
    assert len(unreadable) == 5
    assert [r.levelno for r in unreadable].count(logging.WARNING) == 1
    files = [p for p in directory.iterdir() if p.is_file() and p.name.endswith(".msg")]
    assert len(files) == 2


def test_write_failure_is_reported_once_and_returns_none(
    open_outbox: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = open_outbox()
    shutil.rmtree(tmp_path / "box")  # e.g. someone cleaned /var/lib under the running service
    assert box.add(TOPIC, "a", 1) is None
    assert box.add(TOPIC, "b", 1) is None
    assert box.stats().write_errors == 2
    errors = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR


def test_each_client_id_has_its_own_locked_directory(tmp_path: Path) -> None:
    cfg = OutboxConfig(directory=tmp_path / "shared")
    first = Outbox.for_client(cfg, "audio-monitor-kitchen")
    second = Outbox.for_client(cfg, "audio-monitor-garage")
    try:
        first.add(TOPIC, "kitchen", 1)
        assert first.directory != second.directory
        assert second.pending() == []
        with pytest.raises(ConfigError, match=r"^mqtt\.outbox\.directory: .* in use"):
            Outbox.for_client(cfg, "audio-monitor-kitchen")
    finally:
        first.close()
        second.close()
    reopened = Outbox.for_client(cfg, "audio-monitor-kitchen")  # the lock went with close()
    try:
        assert reopened.pending() == [1]
    finally:
        reopened.close()


@pytest.mark.parametrize(
    ("a", "b"), [("a/b", "a_b"), ("x y", "x_y"), (".", "_"), ("..", "__"), ("é", "e")]
)
def test_namespaces_are_safe_and_distinct(a: str, b: str) -> None:
    names = {namespace_for(a), namespace_for(b)}
    assert len(names) == 2
    for name in names:
        assert "/" not in name and name not in (".", "..") and not name.startswith(".")
    assert namespace_for("audio-monitor-kitchen") == "audio-monitor-kitchen"


def test_unusable_directory_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"^mqtt\.outbox\.directory: cannot create .*a-file"):
        Outbox(blocker / "outbox", max_messages=10, max_bytes=10_000, max_age_seconds=60.0)


def test_default_directory_follows_systemd_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    explicit = resolve_outbox_root(Path("~/box"), {"STATE_DIRECTORY": "/s"})
    assert explicit == tmp_path / "box"
    assert resolve_outbox_root(None, {"STATE_DIRECTORY": "/var/lib/am:/var/lib/other"}) == Path(
        "/var/lib/am/outbox"
    )
    assert resolve_outbox_root(None, {"HOME": str(tmp_path)}) == (
        tmp_path / ".local" / "state" / "audio-monitor" / "outbox"
    )
