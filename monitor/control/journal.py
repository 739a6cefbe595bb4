"""The accepted live changes, kept on disk and replayed on top of the config file at start-up."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from monitor.atomic import write_json_atomic
from monitor.config import slugify
from monitor.config.paths import state_path
from monitor.control.commands import Command, CommandError, Reset, Show, parse_command

logger = logging.getLogger(__name__)

JOURNAL_VERSION = 1


def resolve_state_file(
    configured: Path | None, device_id: str, environ: Mapping[str, str] | None = None
) -> Path:
    """control.state_file, else under $STATE_DIRECTORY, else ~/.local/state/audio-monitor."""
    name = f"{slugify(device_id) or 'monitor'}.json"
    return state_path(configured, "control", name, environ=environ)


def kept(changes: Sequence[Command], command: Command) -> list[Command]:
    """The changes to keep once `command` is accepted."""
    if isinstance(command, Reset):
        return []
    if isinstance(command, Show):
        return list(changes)
    return [*changes, command]


class ChangeJournal:
    """One JSON file of accepted commands, replaced whole on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[Command]:
        """The kept commands; a missing file is none, an unreadable one is none and a warning
        (the file is left for a person to look at, and replaced at the next change)."""
        try:
            body = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as err:
            logger.warning("live label changes in %s not restored: %s", self.path, err)
            return []
        entries = body.get("changes") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            logger.warning("live label changes in %s not restored: no 'changes' list", self.path)
            return []
        commands = []
        for index, entry in enumerate(entries):
            try:
                commands.append(parse_command(json.dumps(entry).encode()))
            except CommandError as err:
                logger.warning("%s: change %d skipped: %s", self.path, index, err)
        return commands

    def save(self, commands: Sequence[Command]) -> None:
        """Replace the file atomically; OSError when the disk refuses."""
        write_json_atomic(
            self.path,
            {
                "version": JOURNAL_VERSION,
                "changes": [c.model_dump(exclude_none=True, exclude={"id"}) for c in commands],
            },
        )
