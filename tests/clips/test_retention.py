"""Retention: clips with their sidecars deleted by age and by size, oldest first."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from monitor.clips.retention import prune, remove_partials

DAY = 86400.0


def make_clip(root: Path, name: str, age_seconds: float, audio_bytes: int = 10_000) -> Path:
    clip = root / name
    clip.parent.mkdir(parents=True, exist_ok=True)
    clip.write_bytes(b"\0" * audio_bytes)
    sidecar = clip.with_suffix(".json")
    sidecar.write_text(json.dumps({"clip": name}))
    moment = time.time() - age_seconds
    for path in (clip, sidecar):
        os.utime(path, (moment, moment))
    return clip


def present(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_clips_older_than_the_age_limit_go_with_their_sidecars(tmp_path: Path) -> None:
    make_clip(tmp_path, "yard/2026-01-01/old.flac", 40 * DAY)
    make_clip(tmp_path, "yard/2026-02-20/new.flac", 1 * DAY)
    (tmp_path / "notes.txt").write_text("the user's own file")
    assert prune(tmp_path, 10**9, 30 * DAY, time.time()) == 1
    assert present(tmp_path) == [
        "notes.txt",
        "yard/2026-02-20/new.flac",
        "yard/2026-02-20/new.json",
    ]
    assert not (tmp_path / "yard" / "2026-01-01").exists()  # its empty day folder too


def test_over_the_size_limit_the_oldest_clips_go_first(tmp_path: Path) -> None:
    for n, age in enumerate((5, 4, 3, 2, 1)):
        make_clip(tmp_path, f"yard/d/clip{n}.wav", age * 60, audio_bytes=100_000)
    # Each clip and sidecar take a little over 100 kB: 250 kB holds the two newest.
    assert prune(tmp_path, 250_000, 30 * DAY, time.time()) == 3
    assert present(tmp_path) == [
        "yard/d/clip3.json",
        "yard/d/clip3.wav",
        "yard/d/clip4.json",
        "yard/d/clip4.wav",
    ]


def test_a_missing_directory_is_nothing_to_prune(tmp_path: Path) -> None:
    assert prune(tmp_path / "none", 1, 1.0, time.time()) == 0
    assert remove_partials(tmp_path / "none") == 0


def test_partial_files_of_an_earlier_run_are_removed(tmp_path: Path) -> None:
    make_clip(tmp_path, "yard/d/done.flac", 60)
    partial = tmp_path / "yard" / "d" / ".cut.flac.x1y2.tmp"
    partial.write_bytes(b"half")
    assert remove_partials(tmp_path) == 1
    assert present(tmp_path) == ["yard/d/done.flac", "yard/d/done.json"]
