"""On-disk cache of label embeddings and exported audio towers, keyed by checkpoint identity."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from monitor.atomic import atomic_write

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the stored layout or the meaning of an entry changes
# Prompts kept per checkpoint: generous for any label file, yet bounded for years of edits.
MAX_PROMPTS_PER_CHECKPOINT = 20000

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(key: str, message: str, *args: object) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(message, *args)


def cache_directory(configured: Path | None) -> Path:
    """model.cache_dir, else systemd's $CACHE_DIRECTORY, else $STATE_DIRECTORY/cache, else
    $XDG_CACHE_HOME/audio-monitor (default ~/.cache/audio-monitor)."""
    if configured is not None:
        return Path(configured).expanduser()
    # systemd joins several configured directories with ":"; the first is ours.
    cache = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    if cache:
        return Path(cache)
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / "cache"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "audio-monitor"


@dataclass(frozen=True)
class CheckpointIdentity:
    """What makes two checkpoints the same for cached results: where its files are and what
    they are (names, sizes and modification times; for a hub snapshot, its commit)."""

    name: str
    revision: str | None
    directory: str
    fingerprint: str

    @property
    def key(self) -> str:
        # The transformers release is part of the key: a fix in its CLAP code or tokenizer
        # must not leave months-old embeddings or exports in use after an upgrade.
        text = json.dumps([CACHE_FORMAT, producer_version(), *asdict(self).values()])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@functools.cache
def producer_version() -> str:
    """The version of the library that computes what is cached (read without importing it)."""
    try:
        return f"transformers {metadata.version('transformers')}"
    except metadata.PackageNotFoundError:
        return "transformers unknown"


def _snapshot_commit(directory: Path) -> str | None:
    """The commit of a Hugging Face cache snapshot directory (.../snapshots/<commit>)."""
    name = directory.name
    if directory.parent.name == "snapshots" and len(name) == 40:
        try:
            int(name, 16)
        except ValueError:
            return None
        return name
    return None


def checkpoint_identity(name: str, revision: str | None, directory: Path) -> CheckpointIdentity:
    """Identity of the checkpoint whose files are in `directory`.

    A hub snapshot is its commit: files the hub client adds to it later (the tokenizer, when
    the text tower is first needed) must not make it look like another checkpoint.
    """
    resolved = Path(directory).expanduser().resolve()
    commit = _snapshot_commit(Path(directory).expanduser())
    if commit is not None:
        return CheckpointIdentity(name, revision, str(resolved), f"commit:{commit}")
    entries = []
    for path in sorted(resolved.iterdir()):
        try:
            stat = path.stat()
        except OSError:
            continue
        if path.is_file():
            entries.append([path.name, stat.st_size, stat.st_mtime_ns])
    fingerprint = hashlib.sha256(json.dumps(entries).encode("utf-8")).hexdigest()
    return CheckpointIdentity(name, revision, str(resolved), fingerprint)


def locate_checkpoint(name: str, revision: str | None) -> Path | None:
    """The local directory holding the checkpoint's files, without touching the network: the
    directory itself, or the Hugging Face cache snapshot of a hub id; None if not there."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception as err:  # an invalid hub id is not our error to report here
        logger.debug("no cached hub snapshot for %s: %s", name, err)
        return None
    return Path(found).parent if isinstance(found, str) else None


class EmbeddingCache:
    """Text embeddings per checkpoint (one .npz each) and a place for exported models.

    A cache that cannot be used is never an error: every problem is logged once and the
    caller computes what it needs.
    """

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._lock = threading.Lock()

    @classmethod
    def open(cls, configured: Path | None) -> EmbeddingCache:
        """The cache at cache_directory(configured), or a disabled one if it is not writable."""
        root = cache_directory(configured)
        try:
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=root):
                pass
        except OSError as err:
            _warn_once(
                f"open:{root}",
                "cache directory %s is not writable (%s); label embeddings (and an ONNX export) "
                "are recomputed at every start; set model.cache_dir to a writable directory",
                root,
                err,
            )
            return cls(None)
        return cls(root)

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _text_path(self, identity: CheckpointIdentity) -> Path | None:
        return None if self.root is None else self.root / "text" / f"{identity.key}.npz"

    def _read(self, path: Path) -> tuple[list[str], np.ndarray] | None:
        try:
            with np.load(path, allow_pickle=False) as data:
                prompts = [str(p) for p in data["prompts"]]
                embeddings = np.asarray(data["embeddings"], dtype=np.float32)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as err:
            _warn_once(f"read:{path}", "ignoring unreadable cache file %s: %s", path, err)
            return None
        if embeddings.ndim != 2 or embeddings.shape[0] != len(prompts):
            _warn_once(f"read:{path}", "ignoring inconsistent cache file %s", path)
            return None
        return prompts, embeddings

    def lookup(self, identity: CheckpointIdentity, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached embeddings of those prompts that have one (exact strings)."""
        path = self._text_path(identity)
        if path is None:
            return {}
        stored = self._read(path)
        if stored is None:
            return {}
        wanted = set(prompts)
        return {p: row for p, row in zip(*stored, strict=True) if p in wanted}

    def store(self, identity: CheckpointIdentity, embeddings: Mapping[str, np.ndarray]) -> None:
        """Add these prompts' embeddings to the checkpoint's file (merged with what is there)."""
        path = self._text_path(identity)
        if path is None or not embeddings:
            return
        with self._lock:
            merged: dict[str, np.ndarray] = {}
            stored = self._read(path)
            if stored is not None:
                merged.update(zip(*stored, strict=True))
            for prompt, row in embeddings.items():
                merged.pop(prompt, None)  # re-inserted last: the newest survive the cap
                merged[prompt] = np.asarray(row, dtype=np.float32)
            kept = list(merged.items())[-MAX_PROMPTS_PER_CHECKPOINT:]
            prompts = np.array([p for p, _ in kept], dtype=np.str_)
            matrix = np.stack([row for _, row in kept]).astype(np.float32)
            meta = np.array(json.dumps(asdict(identity)), dtype=np.str_)
            try:
                atomic_write(
                    path,
                    lambda handle: np.savez(handle, prompts=prompts, embeddings=matrix, meta=meta),
                )
            except OSError as err:
                _warn_once(
                    f"write:{path}",
                    "cannot write cache file %s (%s); continuing without",
                    path,
                    err,
                )

    def artefact_dir(self, identity: CheckpointIdentity) -> Path | None:
        """Directory for files derived from this checkpoint (exported models); None if disabled."""
        return None if self.root is None else self.root / "models" / identity.key


TextEncoder = Callable[[Sequence[str]], np.ndarray]


class CachedTextEmbedder:
    """embed_text for a runner: prompts already embedded (in this process or on disk) are
    looked up, only the rest go through `encode` (which may load a whole text tower)."""

    def __init__(
        self,
        cache: EmbeddingCache,
        identity: CheckpointIdentity | None,
        encode: TextEncoder,
        embedding_dim: int,
    ) -> None:
        self.cache = cache
        self.identity = identity
        self._encode = encode
        self.embedding_dim = embedding_dim
        self._known: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __call__(self, prompts: Sequence[str]) -> np.ndarray:
        """(len(prompts), dim) float32, each row L2-normalised."""
        if isinstance(prompts, str):
            raise TypeError("embed_text takes a sequence of prompts, not a single string")
        if len(prompts) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        with self._lock:
            missing = [p for p in dict.fromkeys(prompts) if p not in self._known]
            if missing and self.identity is not None:
                self._known.update(self.cache.lookup(self.identity, missing))
                missing = [p for p in missing if p not in self._known]
            if missing:
                logger.info("embedding %d prompt(s) not in the cache", len(missing))
                rows = np.asarray(self._encode(missing), dtype=np.float32)
                if rows.shape != (len(missing), self.embedding_dim):
                    raise RuntimeError(
                        f"text encoder returned shape {rows.shape} for {len(missing)} prompts"
                    )
                computed = dict(zip(missing, rows, strict=True))
                if self.identity is not None:
                    self.cache.store(self.identity, computed)
                self._known.update(computed)
            return np.stack([self._known[p] for p in prompts]).astype(np.float32, copy=False)
