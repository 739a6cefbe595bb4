"""Shared fixtures: real broker, virtual audio devices, tiny CLAP checkpoint, private caches."""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.support.broker",
    "tests.support.virtual_audio",
    "tests.support.tiny_clap",
]


@pytest.fixture(autouse=True, scope="session")
def _private_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Label-embedding and ONNX caches in a temp dir (inherited by subprocesses), never ~/.cache."""
    os.environ["CACHE_DIRECTORY"] = str(tmp_path_factory.mktemp("cache"))
