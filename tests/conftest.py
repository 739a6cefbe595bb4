"""Shared fixtures: the real broker, virtual audio devices and a tiny CLAP checkpoint."""

from __future__ import annotations

pytest_plugins = [
    "tests.support.broker",
    "tests.support.virtual_audio",
    "tests.support.tiny_clap",
]
