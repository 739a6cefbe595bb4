"""The multi-source bench's pure parts: the Ks run, their config, and the largest K served."""

from __future__ import annotations

from pathlib import Path

from monitor.bench.results import SourcesResult, SourcesRun
from monitor.bench.sources import largest_served, source_counts, sources_hop, sources_section
from monitor.bench.stats import Percentiles


def result(dropped: int) -> SourcesResult:
    return SourcesResult(
        audio_seconds=60.0,
        wall_seconds=59.0,
        windows=59,
        windows_by_source={"room1": 59},
        windows_per_second=1.0,
        cpu_seconds=30.0,
        cpu_seconds_per_audio_hour_per_source=1800.0,
        latency_ms=Percentiles(40.0, 80.0, 90.0),
        windows_dropped=dropped,
        lost_frames=0,
        events=0,
        rss_after_mib=500.0,
        peak_rss_mib=600.0,
    )


def run(name: str, k: int, dropped: int | None) -> SourcesRun:
    backend, precision = name.split("/")
    if dropped is None:
        return SourcesRun(name, backend, precision, k, ok=False, error="cannot load")
    return SourcesRun(name, backend, precision, k, ok=True, error=None, result=result(dropped))


def test_the_largest_k_is_the_largest_run_that_dropped_nothing_per_configuration() -> None:
    runs = [
        run("torch/fp32", 1, 0),
        run("torch/fp32", 2, 0),
        run("torch/fp32", 4, 3),
        run("onnx/int8", 1, 5),
        run("onnx/int8", 2, None),  # a run that failed served nothing
    ]
    served = largest_served(runs, 1.0)
    assert [(s.name, s.hop_seconds, s.largest_sources) for s in served] == [
        ("torch/fp32", 1.0, 2),
        ("onnx/int8", 1.0, None),
    ]


def test_the_ks_run_once_each_ascending_and_the_hop_defaults_to_one_second() -> None:
    assert source_counts([8, 1, 2, 2]) == (1, 2, 8)
    assert sources_hop(None) == 1.0  # even for windows shorter than a second
    assert sources_hop(0.5) == 0.5


def test_each_source_is_a_real_time_file_named_by_room() -> None:
    section = sources_section(3, Path("/tmp/replay.wav"))
    assert [s["id"] for s in section["sources"]] == ["room1", "room2", "room3"]
    assert all(s["realtime"] is True and s["type"] == "file" for s in section["sources"])
