"""The on-disk embedding cache: where it lives, what keys it, and that it never fails a caller."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from monitor.model import embedcache
from monitor.model.embedcache import (
    CachedTextEmbedder,
    EmbeddingCache,
    cache_directory,
    checkpoint_identity,
    locate_checkpoint,
)

DIM = 8


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "config.json").write_text('{"model_type": "clap"}', encoding="utf-8")
    (directory / "model.safetensors").write_bytes(b"weights" * 10)
    return directory


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedcache, "_warned", set())


class CountingEncoder:
    """A deterministic stand-in for a text tower: one unit vector per prompt, calls recorded."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, prompts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(prompts))
        rows = []
        for prompt in prompts:
            seed = int.from_bytes(prompt.encode("utf-8")[:8].ljust(8, b"\0"), "little")
            row = np.random.default_rng(seed + len(prompt)).standard_normal(DIM)
            rows.append(row / np.linalg.norm(row))
        return np.asarray(rows, dtype=np.float32)


def test_cache_directory_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("CACHE_DIRECTORY", "STATE_DIRECTORY", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_directory(None) == tmp_path / "home" / ".cache" / "audio-monitor"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_directory(None) == tmp_path / "xdg" / "audio-monitor"
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/state:{tmp_path}/other")
    assert cache_directory(None) == tmp_path / "state" / "cache"
    monkeypatch.setenv("CACHE_DIRECTORY", f"{tmp_path}/systemd-cache")
    assert cache_directory(None) == tmp_path / "systemd-cache"
    assert cache_directory(tmp_path / "configured") == tmp_path / "configured"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_directory(Path("~/c")) == tmp_path / "c"


def test_identity_follows_the_files(checkpoint: Path, tmp_path: Path) -> None:
    first = checkpoint_identity("ckpt", None, checkpoint)
    assert checkpoint_identity("ckpt", None, checkpoint) == first
    assert checkpoint_identity("ckpt", "v2", checkpoint).key != first.key
    copy = tmp_path / "copy"
    shutil.copytree(checkpoint, copy)
    assert checkpoint_identity("ckpt", None, copy).key != first.key  # another place
    weights = checkpoint / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = checkpoint_identity("ckpt", None, checkpoint)
    assert touched.key != first.key  # replaced weights, same name
    weights.write_bytes(b"other" * 14)  # same size, new content and time
    assert checkpoint_identity("ckpt", None, checkpoint).key not in (first.key, touched.key)


def test_identity_follows_the_transformers_release(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = checkpoint_identity("ckpt", None, checkpoint)
    before = identity.key
    monkeypatch.setattr(embedcache, "producer_version", lambda: "transformers 99.0")
    assert identity.key != before


def test_local_checkpoint_is_located_as_itself(checkpoint: Path) -> None:
    assert locate_checkpoint(str(checkpoint), None) == checkpoint


def test_hub_snapshot_is_located_without_network(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    repo = hub / "models--owner--clap"
    commit = "a" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}", encoding="utf-8")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    assert locate_checkpoint("owner/clap", None) == snapshot
    assert locate_checkpoint("owner/clap", commit) == snapshot
    assert locate_checkpoint("owner/clap", "no-such-branch") is None
    assert locate_checkpoint("owner/not-downloaded", None) is None
    identity = checkpoint_identity("owner/clap", None, snapshot)
    assert commit in identity.directory
    # The hub client adds the tokenizer when the text tower is first needed: same checkpoint.
    (snapshot / "tokenizer.json").write_text("{}", encoding="utf-8")
    assert checkpoint_identity("owner/clap", None, snapshot) == identity


def test_store_and_lookup_exact_prompts(checkpoint: Path, tmp_path: Path) -> None:
    cache = EmbeddingCache.open(tmp_path / "cache")
    assert cache.enabled
    identity = checkpoint_identity("ckpt", None, checkpoint)
    rows = CountingEncoder()(["dog", "dog ", "Hund 🐕"])
    cache.store(identity, {"dog": rows[0], "dog ": rows[1]})
    cache.store(identity, {"Hund 🐕": rows[2]})  # merged with what is there
    found = cache.lookup(identity, ["dog", "dog ", "Hund 🐕", "cat"])
    assert sorted(found) == ["Hund 🐕", "dog", "dog "]
    np.testing.assert_array_equal(found["dog "], rows[1])
    np.testing.assert_array_equal(found["Hund 🐕"], rows[2])
    assert all(v.dtype == np.float32 for v in found.values())
    other = checkpoint_identity("ckpt", "v2", checkpoint)
    assert cache.lookup(other, ["dog"]) == {}
    leftovers = [p.name for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_damaged_file_is_ignored_then_replaced(
    checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EmbeddingCache.open(tmp_path / "cache")
    identity = checkpoint_identity("ckpt", None, checkpoint)
    path = tmp_path / "cache" / "text" / f"{identity.key}.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING, logger="monitor.model.embedcache"):
        assert cache.lookup(identity, ["dog"]) == {}
        assert cache.lookup(identity, ["dog"]) == {}
    assert sum("unreadable cache file" in r.getMessage() for r in caplog.records) == 1
    row = CountingEncoder()(["dog"])[0]
    cache.store(identity, {"dog": row})
    np.testing.assert_array_equal(cache.lookup(identity, ["dog"])["dog"], row)


def test_unusable_directory_disables_the_cache_with_one_warning(
    checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="monitor.model.embedcache"):
        first = EmbeddingCache.open(blocker / "cache")
        second = EmbeddingCache.open(blocker / "cache")
    assert not first.enabled and not second.enabled
    assert sum("not writable" in r.getMessage() for r in caplog.records) == 1
    identity = checkpoint_identity("ckpt", None, checkpoint)
    first.store(identity, {"dog": np.ones(DIM, dtype=np.float32)})  # silently nothing
    assert first.lookup(identity, ["dog"]) == {}
    assert first.artefact_dir(identity) is None


def test_embedder_encodes_only_what_is_missing(checkpoint: Path, tmp_path: Path) -> None:
    cache = EmbeddingCache.open(tmp_path / "cache")
    identity = checkpoint_identity("ckpt", None, checkpoint)
    encoder = CountingEncoder()
    embed = CachedTextEmbedder(cache, identity, encoder, DIM)
    first = embed(["dog", "cat", "dog"])
    assert first.shape == (3, DIM) and first.dtype == np.float32
    np.testing.assert_array_equal(first[0], first[2])
    assert encoder.calls == [["dog", "cat"]]  # duplicates encoded once
    embed(["cat", "dog"])
    assert encoder.calls == [["dog", "cat"]]  # known in this process

    # A new process (new embedder, same cache): nothing but the new prompt is encoded.
    later_encoder = CountingEncoder()
    later = CachedTextEmbedder(
        EmbeddingCache.open(tmp_path / "cache"), identity, later_encoder, DIM
    )
    again = later(["cat", "bird", "dog"])
    assert later_encoder.calls == [["bird"]]
    np.testing.assert_array_equal(again[[0, 2]], first[[1, 0]])

    assert embed([]).shape == (0, DIM)
    with pytest.raises(TypeError):
        embed("dog")


def test_embedder_without_cache_still_remembers(checkpoint: Path) -> None:
    encoder = CountingEncoder()
    identity = checkpoint_identity("ckpt", None, checkpoint)
    embed = CachedTextEmbedder(EmbeddingCache(None), identity, encoder, DIM)
    embed(["dog"])
    embed(["dog"])
    assert encoder.calls == [["dog"]]


def test_newest_prompts_survive_the_cap(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedcache, "MAX_PROMPTS_PER_CHECKPOINT", 3)
    cache = EmbeddingCache.open(tmp_path / "cache")
    identity = checkpoint_identity("ckpt", None, checkpoint)
    rows = CountingEncoder()(["a", "b", "c", "d"])
    cache.store(identity, {"a": rows[0], "b": rows[1], "c": rows[2]})
    cache.store(identity, {"a": rows[0], "d": rows[3]})  # "a" used again: newest with "d"
    assert sorted(cache.lookup(identity, ["a", "b", "c", "d"])) == ["a", "c", "d"]
