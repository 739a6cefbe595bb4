"""Where clips go: the state directory by default, and a name known at the event's start."""

from __future__ import annotations

from pathlib import Path

from monitor.clips.layout import clip_name, resolve_clips_root, sidecar_name
from tests.support.clips import detection, start_event


def test_the_clips_directory_follows_the_state_directory() -> None:
    assert resolve_clips_root(Path("~/c"), {"HOME": "/home/u"}).name == "c"
    assert resolve_clips_root(None, {"STATE_DIRECTORY": "/var/lib/am:/x"}) == Path(
        "/var/lib/am/clips"
    )
    assert resolve_clips_root(None, {"HOME": "/home/u"}) == Path(
        "/home/u/.local/state/audio-monitor/clips"
    )


def test_a_clip_is_named_from_its_first_window_and_event() -> None:
    start = start_event(detection("porch-cam", 48000 * 3723, 48000 * 3728, 48000))
    name = clip_name(start, "ogg")
    assert name == "porch-cam/2026-03-01/130203_pets_dog_barking_0123abcd.ogg"
    assert sidecar_name(name) == "porch-cam/2026-03-01/130203_pets_dog_barking_0123abcd.json"
