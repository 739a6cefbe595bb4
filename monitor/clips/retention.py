"""Keeps the clips directory within its size and age bounds: oldest clip and sidecar go first."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from monitor.clips.layout import SIDECAR_SUFFIX

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = frozenset({".flac", ".wav", ".ogg"})
PARTIAL_SUFFIX = ".tmp"  # monitor.atomic's temporary files: `.<name>.<random>.tmp`


@dataclass(frozen=True)
class _Entry:
    """One clip and its sidecar (either may be missing), as found on disk."""

    stem: Path  # the path without its suffix
    files: tuple[Path, ...]
    bytes_on_disk: int
    modified_unix: float


def _disk_bytes(path: Path) -> tuple[int, float]:
    st = path.stat()
    # Blocks on disk, like the outbox: a sidecar of 1 kB still takes a 4 kB block.
    return max(st.st_size, getattr(st, "st_blocks", 0) * 512), st.st_mtime


def _entries(root: Path) -> list[_Entry]:
    groups: dict[Path, list[Path]] = {}
    for path in root.rglob("*"):
        suffix = path.suffix.lower()
        if (suffix in AUDIO_SUFFIXES or suffix == SIDECAR_SUFFIX) and not path.name.startswith("."):
            groups.setdefault(path.with_suffix(""), []).append(path)
    entries = []
    for stem, files in groups.items():
        size, modified = 0, 0.0
        present = []
        for path in files:
            try:
                nbytes, mtime = _disk_bytes(path)
            except OSError:
                continue  # deleted meanwhile, or not a regular file we may read
            size += nbytes
            modified = max(modified, mtime)
            present.append(path)
        if present:
            entries.append(_Entry(stem, tuple(present), size, modified))
    return entries


def _delete(entry: _Entry, root: Path) -> None:
    for path in entry.files:
        path.unlink(missing_ok=True)
    # Empty day and source directories go too, so old days do not pile up as empty folders.
    parent = entry.stem.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break  # not empty
        parent = parent.parent


def prune(root: Path, max_bytes: int, max_age_seconds: float, now_unix: float) -> int:
    """Delete clips (with their sidecars) older than `max_age_seconds`, then the oldest until
    the rest fit in `max_bytes`; returns how many were deleted. Only clip and sidecar files
    are looked at: anything else in the directory is left alone."""
    if not root.is_dir():
        return 0
    entries = sorted(_entries(root), key=lambda e: e.modified_unix)
    total = sum(e.bytes_on_disk for e in entries)
    deleted = 0
    for entry in entries:
        too_old = now_unix - entry.modified_unix > max_age_seconds
        if not too_old and total <= max_bytes:
            break  # sorted oldest first: the rest are younger, and they fit
        try:
            _delete(entry, root)
        except OSError as err:
            logger.debug("cannot delete clip %s: %s", entry.stem, err)
            continue
        total -= entry.bytes_on_disk
        deleted += 1
    return deleted


def remove_partials(root: Path) -> int:
    """Delete the temporary files of clips a previous run did not finish (at start only)."""
    if not root.is_dir():
        return 0
    removed = 0
    for path in root.rglob(f".*{PARTIAL_SUFFIX}"):
        try:
            path.unlink()
            removed += 1
        except OSError as err:
            logger.debug("cannot delete %s: %s", path, err)
    return removed
