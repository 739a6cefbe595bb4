"""On-disk outbox: unacknowledged messages kept one small file each, so they survive a restart."""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from monitor.config import OutboxConfig
from monitor.config.paths import state_path
from monitor.errors import ConfigError

logger = logging.getLogger(__name__)

CONFIG_KEY = "mqtt.outbox.directory"
BYTES_PER_MEGABYTE = 1_000_000
_FORMAT_VERSION = 1
# <sequence>-<creation time in ms since the epoch>.msg: the order and the age are known from
# a directory listing, without opening thousands of files at start-up.
_ENTRY_RE = re.compile(r"^(\d{12})-(\d{1,16})\.msg$")
_TMP_RE = re.compile(r"^\.\d+\.tmp$")
_SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$")


def resolve_outbox_root(directory: Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """The configured directory, else $STATE_DIRECTORY/outbox, else ~/.local/state/..."""
    return state_path(directory, "outbox", environ=environ)


def namespace_for(client_id: str) -> str:
    """A directory name for one MQTT client id; distinct ids never share one."""
    if _SAFE_NAME_RE.match(client_id):
        return client_id
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", client_id).lstrip(".")[:60]
    digest = hashlib.sha256(client_id.encode("utf-8", errors="surrogatepass")).hexdigest()[:12]
    return f"{cleaned}-{digest}" if cleaned else digest


@dataclass(frozen=True)
class OutboxMessage:
    """One message read back from the outbox."""

    seq: int  # position in the outbox, increasing: lower = older
    topic: str
    payload: str
    qos: int
    created_unix: float  # wall-clock time it was added (ages survive a restart)


@dataclass(frozen=True)
class OutboxStats:
    """Counters of one outbox since it was opened."""

    pending: int  # messages on disk now
    pending_bytes: int  # disk space they use
    restored: int  # messages an earlier run left behind, found at open (expired ones excluded)
    written: int  # messages added
    dropped_full: int  # oldest messages dropped because max_messages or max_bytes was reached
    dropped_expired: int  # messages dropped because they were older than max_age
    dropped_corrupt: int  # unreadable entries removed
    write_errors: int  # messages that could not be written (kept in memory only)


@dataclass(frozen=True)
class _Entry:
    name: str
    created_unix: float
    size_bytes: int


def _disk_bytes(st: os.stat_result) -> int:
    # Allocated blocks, not the length: 10 000 tiny files take 40 MB on a 4 KiB-block disk.
    return max(st.st_size, st.st_blocks * 512, 1)


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


class Outbox:
    """Messages written atomically (tmp + fsync + rename) and removed once acknowledged.

    Thread-safe. One directory per MQTT client (see :func:`namespace_for`), locked with
    flock while open so a second monitor with the same client id fails at start instead of
    sending (and deleting) the first one's messages. When a bound is reached the oldest
    messages go first; each kind of loss is logged once until :meth:`rearm_warnings`.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_messages: int,
        max_bytes: int,
        max_age_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_messages < 1 or max_bytes < 1 or max_age_seconds <= 0:
            raise ValueError("outbox bounds must be positive")
        self.directory = directory
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[int, _Entry] = collections.OrderedDict()
        self._bytes = 0
        self._next_seq = 1
        self._closed = False
        self._written = 0
        self._dropped_full = 0
        self._dropped_expired = 0
        self._dropped_corrupt = 0
        self._write_errors = 0
        self._full_logged = False
        self._expired_logged = False
        self._write_error_logged = False
        self._corrupt_logged = False
        self._remove_error_logged = False
        self._dir_fd = self._open_directory(directory)
        try:
            self._scan()
        except OSError as err:
            os.close(self._dir_fd)
            raise ConfigError(f"{CONFIG_KEY}: cannot read {directory}: {_reason(err)}") from err
        self._restored = len(self._entries)

    @classmethod
    def for_client(
        cls, cfg: OutboxConfig, client_id: str, environ: Mapping[str, str] | None = None
    ) -> Outbox:
        """The outbox of `client_id` under the configured (or default) directory."""
        root = resolve_outbox_root(cfg.directory, environ)
        return cls(
            root / namespace_for(client_id),
            max_messages=cfg.max_messages,
            max_bytes=max(1, round(cfg.max_megabytes * BYTES_PER_MEGABYTE)),
            max_age_seconds=cfg.max_age_hours * 3600.0,
        )

    @staticmethod
    def _open_directory(directory: Path) -> int:
        try:
            missing: list[Path] = []
            probe = directory
            while not probe.exists() and probe != probe.parent:
                missing.append(probe)
                probe = probe.parent
            for path in reversed(missing):
                with contextlib.suppress(FileExistsError):
                    path.mkdir(mode=0o700)
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise ConfigError(f"{CONFIG_KEY}: cannot create {directory}: {_reason(err)}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(
                    f"{CONFIG_KEY}: {directory} is in use by another running monitor "
                    "(give each monitor its own mqtt.client_id)"
                ) from err
            raise ConfigError(f"{CONFIG_KEY}: cannot lock {directory}: {_reason(err)}") from err
        probe_path = directory / f".{os.getpid()}.tmp"
        try:
            # Proves the directory is writable now, not at the first detection.
            with open(probe_path, "wb") as probe_file:
                probe_file.write(b"probe")
            probe_path.unlink()
        except OSError as err:
            os.close(fd)
            raise ConfigError(f"{CONFIG_KEY}: cannot write in {directory}: {_reason(err)}") from err
        return fd

    def _scan(self) -> None:
        found: list[tuple[int, _Entry]] = []
        for item in os.scandir(self.directory):
            name = item.name
            if _TMP_RE.match(name):
                # A write interrupted before its rename: the message was never handed over.
                with contextlib.suppress(OSError):
                    os.unlink(item.path)
                continue
            match = _ENTRY_RE.match(name)
            if match is None:
                continue
            try:
                st = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            created_unix = int(match.group(2)) / 1000.0
            found.append((int(match.group(1)), _Entry(name, created_unix, _disk_bytes(st))))
        found.sort(key=lambda pair: pair[0])
        for seq, entry in found:
            self._entries[seq] = entry
            self._bytes += entry.size_bytes
        if found:
            self._next_seq = found[-1][0] + 1
        expired = self._expire(self._clock(), log=False)
        full = self._enforce_bounds(log=False)
        if expired:
            logger.warning(
                "MQTT outbox %s: dropped %d message(s) older than %.1f h "
                "(mqtt.outbox.max_age_hours)",
                self.directory,
                expired,
                self.max_age_seconds / 3600.0,
            )
        if full:
            logger.warning(
                "MQTT outbox %s: dropped the %d oldest message(s) to fit mqtt.outbox limits",
                self.directory,
                full,
            )

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def pending(self) -> list[int]:
        """Sequence numbers of the messages on disk, oldest first."""
        with self._lock:
            return list(self._entries)

    def add(self, topic: str, payload: str, qos: int) -> int | None:
        """Write one message durably; its sequence number, or None if it could not be kept."""
        body = json.dumps(
            {"v": _FORMAT_VERSION, "topic": topic, "qos": qos, "payload": payload},
            separators=(",", ":"),
        ).encode("ascii")
        with self._lock:
            if self._closed:
                return None
            now = self._clock()
            seq = self._next_seq
            self._next_seq += 1
            name = f"{seq:012d}-{max(0, round(now * 1000))}.msg"
            tmp = self.directory / f".{seq}.tmp"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                with open(fd, "wb") as file:
                    file.write(body)
                    file.flush()
                    os.fsync(file.fileno())
                    size = _disk_bytes(os.fstat(file.fileno()))
                os.rename(tmp, self.directory / name)
                # Makes the rename itself survive a power cut, not only the file's content.
                os.fsync(self._dir_fd)
            except OSError as err:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                self._write_errors += 1
                if not self._write_error_logged:
                    self._write_error_logged = True
                    logger.error(
                        "MQTT outbox %s: cannot write a message (%s); it is kept in memory only",
                        self.directory,
                        _reason(err),
                    )
                return None
            self._entries[seq] = _Entry(name, now, size)
            self._bytes += size
            self._written += 1
            self._expire(now, log=True)
            self._enforce_bounds(log=True)
            return seq if seq in self._entries else None

    def read(self, seq: int) -> OutboxMessage | None:
        """The message `seq`, or None if it is gone, expired, or unreadable (then removed)."""
        with self._lock:
            entry = self._entries.get(seq)
            if entry is None or self._closed:
                return None
            if self._is_expired(entry, self._clock()):
                self._drop(seq)
                self._dropped_expired += 1
                self._note_expired()
                return None
            try:
                data = json.loads((self.directory / entry.name).read_bytes())
                topic, payload, qos = data["topic"], data["payload"], data["qos"]
                if not (
                    data.get("v") == _FORMAT_VERSION
                    and isinstance(topic, str)
                    and topic
                    and isinstance(payload, str)
                    and qos in (1, 2)
                ):
                    raise ValueError("unexpected content")
            except (OSError, ValueError, TypeError, KeyError) as err:
                self._drop(seq)
                self._dropped_corrupt += 1
                level = logging.DEBUG if self._corrupt_logged else logging.WARNING
                self._corrupt_logged = True
                logger.log(
                    level,
                    "MQTT outbox %s: removed unreadable entry %s (%s)",
                    self.directory,
                    entry.name,
                    err,
                )
                return None
            return OutboxMessage(seq, topic, payload, int(qos), entry.created_unix)

    def remove(self, seq: int) -> None:
        """Forget `seq` (acknowledged by the broker); unknown numbers are ignored."""
        with self._lock:
            if not self._closed:
                self._drop(seq)

    def expire(self) -> int:
        """Drop the messages older than the age limit now; how many were dropped."""
        with self._lock:
            return 0 if self._closed else self._expire(self._clock(), log=True)

    def rearm_warnings(self) -> None:
        """Log the next loss again (called when a new outage may begin: on connect)."""
        with self._lock:
            self._full_logged = False
            self._expired_logged = False
            self._write_error_logged = False

    def stats(self) -> OutboxStats:
        with self._lock:
            return OutboxStats(
                pending=len(self._entries),
                pending_bytes=self._bytes,
                restored=self._restored,
                written=self._written,
                dropped_full=self._dropped_full,
                dropped_expired=self._dropped_expired,
                dropped_corrupt=self._dropped_corrupt,
                write_errors=self._write_errors,
            )

    def close(self) -> None:
        """Release the directory lock; the files stay for the next run. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._dir_fd)

    # The helpers below run with self._lock held.

    def _is_expired(self, entry: _Entry, now: float) -> bool:
        return now - entry.created_unix > self.max_age_seconds

    def _expire(self, now: float, *, log: bool) -> int:
        dropped = 0
        while self._entries:
            seq, entry = next(iter(self._entries.items()))
            if not self._is_expired(entry, now):
                break
            self._drop(seq)
            dropped += 1
        self._dropped_expired += dropped
        if dropped and log:
            self._note_expired()
        return dropped

    def _note_expired(self) -> None:
        if not self._expired_logged:
            self._expired_logged = True
            logger.warning(
                "MQTT outbox %s: dropping messages older than %.1f h (mqtt.outbox.max_age_hours)",
                self.directory,
                self.max_age_seconds / 3600.0,
            )

    def _enforce_bounds(self, *, log: bool) -> int:
        dropped = 0
        while self._entries and (
            len(self._entries) > self.max_messages or self._bytes > self.max_bytes
        ):
            self._drop(next(iter(self._entries)))
            dropped += 1
        self._dropped_full += dropped
        if dropped and log and not self._full_logged:
            self._full_logged = True
            logger.warning(
                "MQTT outbox %s is full (max_messages=%d, max_megabytes=%g); "
                "dropping the oldest messages",
                self.directory,
                self.max_messages,
                self.max_bytes / BYTES_PER_MEGABYTE,
            )
        return dropped

    def _drop(self, seq: int) -> None:
        entry = self._entries.pop(seq, None)
        if entry is None:
            return
        self._bytes -= entry.size_bytes
        try:
            os.unlink(self.directory / entry.name)
        except FileNotFoundError:
            pass
        except OSError as err:
            # The message may come back at the next start: a duplicate, never a loss.
            if not self._remove_error_logged:
                self._remove_error_logged = True
                logger.warning(
                    "MQTT outbox %s: cannot remove %s (%s)",
                    self.directory,
                    entry.name,
                    _reason(err),
                )
