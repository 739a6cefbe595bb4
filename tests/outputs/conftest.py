"""Keeps outboxes and credentials of the output tests (and their child processes) private."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default outboxes (and those of child processes) go to the test's tmp dir, not ~."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
