"""Shared fixtures (broker, stream servers, virtual audio, tiny CLAP, private caches); slow tier."""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.support.broker",
    "tests.support.daemons",
    "tests.support.netstreams",
    "tests.support.virtual_audio",
    "tests.support.tiny_clap",
]

# Fixtures that make every test using them slow: the tiny checkpoint means importing torch
# and transformers and loading a model; a private PulseAudio server is a daemon per test
# and real-time capture.
SLOW_FIXTURES = frozenset({"tiny_clap_dir", "pulse_null_sink"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` the tests that use a SLOW_FIXTURES fixture, directly or through another."""
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="session")
def _private_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Label-embedding and ONNX caches in a temp dir (inherited by subprocesses), never ~/.cache."""
    os.environ["CACHE_DIRECTORY"] = str(tmp_path_factory.mktemp("cache"))
