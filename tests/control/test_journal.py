"""Kept live changes: where they are, how they survive, and a damaged file loses nothing else."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from monitor.control.commands import parse_command
from monitor.control.journal import ChangeJournal, kept, resolve_state_file


def test_the_file_is_under_the_state_directory_one_per_device() -> None:
    assert resolve_state_file(None, "House 1", {"STATE_DIRECTORY": "/var/lib/am:/x"}) == Path(
        "/var/lib/am/control/house_1.json"
    )
    assert resolve_state_file(None, "house", {"HOME": "/home/u"}) == Path(
        "/home/u/.local/state/audio-monitor/control/house.json"
    )
    assert resolve_state_file(Path("/etc/x.json"), "house", {}) == Path("/etc/x.json")


def test_changes_round_trip_without_request_ids(tmp_path: Path) -> None:
    journal = ChangeJournal(tmp_path / "deep" / "house.json")
    add = parse_command(
        b'{"command": "add_label", "id": "r1", "label_set": "h", "name": "k", "prompt": "p"}'
    )
    off = parse_command(b'{"command": "disable_set", "label_set": "h"}')
    journal.save([add, off])
    body = json.loads(journal.path.read_text())
    assert body["version"] == 1 and "id" not in body["changes"][0]
    loaded = journal.load()
    assert [c.command for c in loaded] == ["add_label", "disable_set"]
    assert loaded[0].model_dump(exclude={"id"}) == add.model_dump(exclude={"id"})


def test_reset_forgets_and_show_keeps() -> None:
    add = parse_command(b'{"command": "add_label", "label_set": "h", "name": "k"}')
    assert kept([add], parse_command(b'{"command": "show"}')) == [add]
    assert kept([add], parse_command(b'{"command": "reset"}')) == []
    assert len(kept([add], add)) == 2


def test_a_damaged_file_restores_nothing_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "house.json"
    path.write_text("{half a file")
    with caplog.at_level(logging.WARNING):
        assert ChangeJournal(path).load() == []
    assert "live label changes in" in caplog.text and "not restored" in caplog.text
    path.write_text(json.dumps({"changes": [{"command": "add_label"}, {"command": "reset"}]}))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert [c.command for c in ChangeJournal(path).load()] == ["reset"]
    assert "change 0 skipped: label_set: required key is missing" in caplog.text
    assert ChangeJournal(tmp_path / "absent.json").load() == []
