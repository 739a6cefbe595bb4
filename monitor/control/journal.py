"""The accepted live changes, kept on disk and replayed on top of the config file at start-up."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from monitor.atomic import write_json_atomic
from monitor.config import slugify
from monitor.control.commands import Command, CommandError, Reset, Show, parse_command

logger = logging.getLogger(__name__)

JOURNAL_VERSION = 1


def resolve_state_file(
    configured: Path | None, device_id: str, environ: Mapping[str, str] | None = None
) -> Path:
    """control.state_file, else under $STATE_DIRECTORY, else ~/.local/state/audio-monitor."""
    env = os.environ if environ is None else environ
    if configured is not None:
        return configured.expanduser()
    name = f"{slugify(device_id) or 'monitor'}.json"
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / "control" / name
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".local" / "state" / "audio-monitor" / "control" / name


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
