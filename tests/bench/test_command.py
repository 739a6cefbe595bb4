"""`audio-monitor bench` run as a subprocess on the tiny checkpoint: fields, agreement, replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from monitor.cli import main
from monitor.errors import EXIT_CONFIG
from tests.support.bench import SOURCES_RUN_KEYS
from tests.support.broker import Broker

TIMEOUT_SECONDS = 240.0

COMPARE_FIELDS = {
    "mode",
    "note",
    "checkpoint",
    "environment",
    "workload",
    "reference",
    "monitor",
    "targets",
    "targets_workload",
    "roofline",
}
PATH_FIELDS = {"name", "ok", "error", "load_seconds", "ms", "cpu_ms", "rtf", "rss_mib"}
MONITOR_FIELDS = PATH_FIELDS | {
    "backend",
    "precision",
    "text_embedding_seconds",
    "stages_ms",
    "features_separate",
    "front_end_fraction",
    "speedup_vs_pipeline",
    "speedup_min_vs_pipeline",
    "cpu_speedup_vs_pipeline",
    "torch_imported",
    "transformers_imported",
    "rss_ratio_vs_pipeline",
    "agreement",
}
AGREEMENT_FIELDS = {
    "max_abs_score_diff",
    "top1_agreement",
    "embedding_cosine_min",
    "embedding_cosine_mean",
}
STAGES = {"resample", "features", "audio_tower", "scoring"}
RSS_FIELDS = {"steady", "peak", "after_load", "anon", "file", "error"}
TARGET_FIELDS = {"target", "config", "value", "limit", "met", "detail"}
REPLAY_RUN_FIELDS = {
    "name",
    "backend",
    "precision",
    "ok",
    "error",
    "audio_seconds",
    "windows",
    "wall_seconds",
    "windows_per_second",
    "speed_vs_realtime",
    "cpu_seconds",
    "cpu_seconds_per_audio_hour",
    "latency_ms",
    "processing_ms",
    "windows_scored",
    "windows_skipped_lagging",
    "events",
    "lost_frames",
}
SOURCES_FIELDS = {
    "mode",
    "note",
    "checkpoint",
    "environment",
    "replay",
    "sources",
    "runs",
    "served",
}
SOURCES_RUN_FIELDS = set(SOURCES_RUN_KEYS)
SERVED_FIELDS = {"name", "backend", "precision", "hop_seconds", "largest_sources"}


def run_bench(args: list[str], tmp_path: Path) -> tuple[int, dict[str, Any], str]:
    """Run `python -m monitor bench ... --json` with its caches in tmp_path."""
    env = dict(os.environ)
    env["CACHE_DIRECTORY"] = str(tmp_path / "cache")  # label embeddings, exports: not ~/.cache
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "bench", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        env=env,
        check=False,
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"stdout is not one JSON document:\n{done.stdout}\n{done.stderr[-3000:]}")
    return done.returncode, report, done.stderr


def test_compare_reports_every_field_and_fp32_matches_the_pipeline(
    tiny_clap_dir: Path, tmp_path: Path
) -> None:
    code, report, stderr = run_bench(
        [
            "--model",
            str(tiny_clap_dir),
            "--windows",
            "2",
            "--labels",
            "4",
            "--window-seconds",
            "1.5",
            "--hop-seconds",
            "0.5",
            "--threads",
            "1",
        ],
        tmp_path,
    )
    assert code == 0, stderr[-3000:]
    assert set(report) >= COMPARE_FIELDS
    assert report["mode"] == "compare"
    # A checkpoint directory was given: real weights as far as the bench knows, no warning.
    assert report["note"] is None
    assert report["checkpoint"]["origin"] == "directory"
    assert report["checkpoint"]["random_weights"] is False
    work = report["workload"]
    assert (work["windows"], work["labels"], work["window_seconds"]) == (2, 4, 1.5)
    assert work["hop_seconds"] == 0.5
    assert work["source_rate_hz"] == 44100  # generated audio: resampling is part of the path
    env = report["environment"]
    assert env["torch_threads"] == 1
    assert {"cpu_count", "versions", "load_average_before", "load_average_after"} <= set(env)

    ref = report["reference"]
    assert set(ref) >= PATH_FIELDS
    assert ref["ok"] is True, ref["error"]
    assert 0 < ref["ms"]["min"] <= ref["ms"]["median"] <= ref["ms"]["max"]
    assert ref["rtf"] == pytest.approx(ref["ms"]["median"] / 1500.0)
    assert set(ref["rss_mib"]) == RSS_FIELDS
    assert ref["rss_mib"]["error"] is None
    assert 0 < ref["rss_mib"]["steady"] <= ref["rss_mib"]["peak"]

    (fp32,) = report["monitor"]
    assert set(fp32) >= MONITOR_FIELDS
    assert (fp32["name"], fp32["ok"]) == ("torch/fp32", True), fp32["error"]
    assert set(fp32["stages_ms"]) == STAGES
    assert fp32["stages_ms"]["audio_tower"]["median"] > 0
    assert fp32["stages_ms"]["resample"]["median"] > 0
    ms = fp32["ms"]
    assert 0 < ms["min"] <= ms["median"] <= ms["max"]
    assert fp32["speedup_vs_pipeline"] == pytest.approx(ref["ms"]["median"] / ms["median"])
    assert fp32["speedup_min_vs_pipeline"] == pytest.approx(ref["ms"]["min"] / ms["min"])
    assert fp32["cpu_speedup_vs_pipeline"] == pytest.approx(
        ref["cpu_ms"]["median"] / fp32["cpu_ms"]["median"]
    )
    assert fp32["torch_imported"] is True  # the torch backend, in its own child process
    assert fp32["transformers_imported"] is False  # its traced graph, loaded from the cache
    rss = fp32["rss_mib"]
    assert rss["error"] is None and 0 < rss["steady"] <= rss["peak"]
    assert fp32["rss_ratio_vs_pipeline"] == pytest.approx(rss["steady"] / ref["rss_mib"]["steady"])
    agreement = fp32["agreement"]
    assert set(agreement) == AGREEMENT_FIELDS
    assert agreement["max_abs_score_diff"] <= 1e-4
    assert agreement["top1_agreement"] == 1.0
    assert agreement["embedding_cosine_min"] >= 1 - 1e-5

    for target in report["targets"]:
        assert set(target) == TARGET_FIELDS
    names = {(t["config"], t["target"]) for t in report["targets"]}
    assert any(c == "torch/fp32" and "RSS" in t for c, t in names)
    assert any(c == "onnx/int8" and "RSS" in t for c, t in names)
    onnx_rss = next(t for t in report["targets"] if t["config"] == "onnx/int8")
    assert onnx_rss["met"] is None and "not measured" in onnx_rss["detail"]
    # 1.5 s windows and 4 labels are not the targets' workload: verdicts are only indicative.
    assert report["targets_workload"] is False
    # How close to the machine's limit: the tower's work counted, a sgemm peak measured.
    roof = report["roofline"]
    assert roof["tower_gflop_per_window"] > 0 and roof["sgemm_peak_gflops"] > 0
    env = report["environment"]
    assert env["cpu_model"] and isinstance(env["cpu_isa"], list)


def test_replay_runs_the_whole_daemon_and_reports_throughput(
    tiny_clap_dir: Path, tmp_path: Path, mosquitto: Broker
) -> None:
    code, report, stderr = run_bench(
        [
            "--model",
            str(tiny_clap_dir),
            "--labels",
            "3",
            "--window-seconds",
            "2",
            "--threads",
            "1",
            "--replay-minutes",
            "0.2",
            "--mqtt",
            f"{mosquitto.host}:{mosquitto.port}",
        ],
        tmp_path,
    )
    assert code == 0, stderr[-3000:]
    assert report["mode"] == "replay"
    replay = report["replay"]
    assert replay["hop_seconds"] == 1.0
    assert replay["mqtt"] == f"{mosquitto.host}:{mosquitto.port}"
    (run,) = report["runs"]
    assert set(run) >= REPLAY_RUN_FIELDS
    assert run["ok"] is True, run["error"]
    # 12 s of audio, 2 s windows every 1 s: windows end at 2, 3, ..., 12 s.
    assert run["audio_seconds"] == pytest.approx(12.0)
    assert run["windows"] == 11
    assert run["windows_scored"] == 11
    assert run["windows_skipped_lagging"] == 0
    assert run["lost_frames"] == 0
    assert run["windows_per_second"] == pytest.approx(run["windows"] / run["wall_seconds"])
    assert run["cpu_seconds"] > 0
    assert run["cpu_seconds_per_audio_hour"] == pytest.approx(run["cpu_seconds"] * 300.0)
    for key in ("latency_ms", "processing_ms"):
        stats = run[key]
        assert 0 < stats["p50"] <= stats["p99"] <= stats["max"]
    # Waiting behind earlier windows counts in the latency, never in the processing time.
    assert run["processing_ms"]["p50"] <= run["latency_ms"]["p50"]
    # The daemon really published: every label's state is retained on the broker.
    state = mosquitto.read_retained("audio-monitor-bench/bench/bench/dog_barking/state")
    assert state in ("ON", "OFF")


def test_the_quiet_home_soundscape_replayed_with_the_change_gate_off_and_on(
    tiny_clap_dir: Path, tmp_path: Path
) -> None:
    code, report, stderr = run_bench(
        [
            *("--model", str(tiny_clap_dir), "--labels", "3", "--window-seconds", "2"),
            *("--threads", "1", "--replay-minutes", "1", "--soundscape", "quiet-home"),
            *("--change-gate", "off", "on"),
        ],
        tmp_path,
    )
    assert code == 0, stderr[-3000:]
    assert report["replay"]["audio"].startswith("quiet home: noise at -50 dBFS")
    off, on = report["runs"]
    assert (off["name"], on["name"]) == ("torch/fp32", "torch/fp32+gate")
    assert off["windows"] == on["windows"] == 59  # 2 s windows every 1 s over 60 s
    assert off["windows_gated"] == 0 and off["windows_scored"] == 59
    # Steady noise most of the minute: most windows carried, the rest scored.
    assert on["windows_gated"] > on["windows_scored"] > 0
    assert on["windows_gated"] + on["windows_scored"] == 59


def test_a_configuration_that_cannot_run_is_one_line_not_a_crash(
    tiny_clap_dir: Path, tmp_path: Path
) -> None:
    # The onnx backend has no bf16 (the export is fp32 or int8): the monitor's path fails at
    # load, the pipeline is still measured, and the command exits 1.
    code, report, stderr = run_bench(
        [
            "--model",
            str(tiny_clap_dir),
            "--windows",
            "1",
            "--labels",
            "2",
            "--window-seconds",
            "1",
            "--backend",
            "onnx",
            "--precision",
            "bf16",
        ],
        tmp_path,
    )
    assert code == 1
    assert "Traceback" not in stderr
    assert report["reference"]["ok"] is True
    (failed,) = report["monitor"]
    assert (failed["name"], failed["ok"]) == ("onnx/bf16", False)
    assert "bf16" in failed["error"] and "\n" not in failed["error"]
    assert failed["ms"] is None and failed["agreement"]["max_abs_score_diff"] is None
    assert failed["rss_mib"]["steady"] is None  # no child process for a path that cannot load
    verdicts = [t for t in report["targets"] if t["config"] == "onnx/bf16"]
    assert verdicts and all(t["met"] is None and t["detail"] for t in verdicts)


def test_precision_auto_reports_what_it_resolved_to(tiny_clap_dir: Path, tmp_path: Path) -> None:
    # Within torch only, to keep the test short: every torch precision this CPU allows.
    code, report, stderr = run_bench(
        [
            "--model",
            str(tiny_clap_dir),
            "--windows",
            "1",
            "--labels",
            "2",
            "--window-seconds",
            "1",
            "--backend",
            "torch",
            "--precision",
            "auto",
        ],
        tmp_path,
    )
    assert code == 0, stderr[-3000:]
    (auto,) = report["monitor"]
    assert auto["ok"] is True
    assert auto["backend"] == "torch" and auto["precision"] in {"fp32", "int8", "bf16"}
    assert auto["name"] == f"torch/auto→torch/{auto['precision']}"
    assert auto["rss_mib"]["steady"] is not None  # the child loaded the resolved path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sources", "1", "2"], "--sources is only used with --replay-minutes"),
        (
            ["--replay-minutes", "1", "--sources", "2", "0"],
            "--sources: each K must be at least 1 (got 0)",
        ),
    ],
)
def test_sources_arguments_out_of_place_are_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Checked before anything loads: no checkpoint is needed to be told.
    assert main(["bench", *args]) == EXIT_CONFIG
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"audio-monitor: error: {message}"]
    assert captured.out == ""


@pytest.mark.slow
def test_sources_runs_k_real_time_sources_in_one_daemon_per_k(
    tiny_clap_dir: Path, tmp_path: Path
) -> None:
    code, report, stderr = run_bench(
        [
            "--model",
            str(tiny_clap_dir),
            "--labels",
            "3",
            "--window-seconds",
            "1",
            "--threads",
            "1",
            "--replay-minutes",
            "0.05",
            "--sources",
            "1",
            "2",
        ],
        tmp_path,
    )
    assert code == 0, stderr[-3000:]
    assert set(report) == SOURCES_FIELDS
    assert report["mode"] == "sources"
    assert report["sources"] == [1, 2]
    assert report["replay"]["hop_seconds"] == 1.0  # the default with --sources
    runs = report["runs"]
    assert [run["sources"] for run in runs] == [1, 2]
    for run in runs:
        assert set(run) == SOURCES_RUN_FIELDS
        assert run["ok"] is True, run["error"]
        assert run["audio_seconds"] == pytest.approx(3.0)
        k = run["sources"]
        by_source = run["windows_by_source"]
        assert sorted(by_source) == [f"room{i}" for i in range(1, k + 1)]
        assert all(windows > 0 for windows in by_source.values()), by_source
        assert run["windows"] >= sum(by_source.values())
        assert run["windows_dropped"] >= 0
        assert run["lost_frames"] == 0  # 3 s of audio always fits the 30 s ring
        assert run["cpu_seconds_per_audio_hour_per_source"] == pytest.approx(
            run["cpu_seconds"] * 3600.0 / (k * 3.0)
        )
        latency = run["latency_ms"]
        assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
        assert run["rss_after_mib"] > 0
    (served,) = report["served"]
    assert set(served) == SERVED_FIELDS
    assert (served["name"], served["hop_seconds"]) == ("torch/fp32", 1.0)
    assert served["largest_sources"] in (None, 1, 2)
