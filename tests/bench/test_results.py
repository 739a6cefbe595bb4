"""The bench's result dataclasses: their JSON, the targets judged on them, and their text."""

from __future__ import annotations

import json
import re
from dataclasses import replace

from monitor.bench.compare import rss_mib
from monitor.bench.memory import ChildMemory
from monitor.bench.report import format_replay, format_sources, format_table
from monitor.bench.results import (
    Agreement,
    CheckpointReport,
    CompareReport,
    Environment,
    MonitorResult,
    ReferenceResult,
    ReplayReport,
    ReplayResult,
    ReplayRun,
    ReplaySettings,
    Roofline,
    RssMib,
    SourcesReport,
    SourcesResult,
    SourcesRun,
    SourcesServed,
    WorkloadReport,
)
from monitor.bench.stats import Percentiles, Summary
from monitor.bench.targets import evaluate_targets
from tests.support.bench import SOURCES_RUN_KEYS

CHECKPOINT = CheckpointReport("directory", "/models/clap", False, None, None)
ENVIRONMENT = Environment(
    2, "Test CPU", ("avx2",), 2, "3.11", "Linux", {"torch": "2"}, 100.0, (1.0, 0.5, 0.2), None
)
REFERENCE = ReferenceResult(
    "pipeline", True, None, 1.0, Summary(400.0, 390.0, 420.0), None, 0.04, RssMib(900.0)
)


def monitor_result(name: str = "torch/fp32", **changes: object) -> MonitorResult:
    backend, precision = name.split("/")
    result = MonitorResult(
        name=name,
        backend=backend,
        precision=precision,
        ok=True,
        error=None,
        load_seconds=0.5,
        text_embedding_seconds=0.1,
        ms=Summary(50.0, 48.0, 55.0),
        cpu_ms=Summary(90.0, 85.0, 99.0),
        stages_ms={
            "resample": Summary(0.5, 0.4, 0.6),
            "features": Summary(1.5, 1.4, 1.6),
            "audio_tower": Summary(48.0, 46.0, 53.0),
            "scoring": Summary(0.1, 0.1, 0.1),
        },
        features_separate=True,
        front_end_fraction=2.0 / 48.0,
        rtf=0.005,
        speedup_vs_pipeline=8.0,
        speedup_min_vs_pipeline=8.1,
        cpu_speedup_vs_pipeline=8.5,
        rss_mib=RssMib(450.0, 460.0, 300.0, 400.0, 50.0),
        torch_imported=True,
        transformers_imported=False,
        rss_ratio_vs_pipeline=0.5,
        agreement=Agreement(1e-8, 1.0, 0.9999, 1.0),
    )
    return replace(result, **changes)  # type: ignore[arg-type]


def compare_report(*monitor: MonitorResult) -> CompareReport:
    workload = WorkloadReport(20, 10.0, 1.0, 30, 1, "This is a sound of {}.", 1, "generated", 44100)
    return CompareReport(
        note=None,
        checkpoint=CHECKPOINT,
        environment=ENVIRONMENT,
        workload=workload,
        reference=REFERENCE,
        monitor=monitor,
        targets=tuple(evaluate_targets(monitor)),
        targets_workload=True,
    )


def test_the_compare_json_keeps_its_documented_key_order() -> None:
    report = json.loads(json.dumps(compare_report(monitor_result()).as_json()))
    assert list(report) == [
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
    ]
    assert report["mode"] == "compare"
    assert list(report["reference"]["rss_mib"]) == [
        "steady",
        "peak",
        "after_load",
        "anon",
        "file",
        "error",
    ]
    assert report["reference"]["ms"] == {"median": 400.0, "min": 390.0, "max": 420.0}
    assert report["environment"]["load_average_before"] == [1.0, 0.5, 0.2]
    (fp32,) = report["monitor"]
    assert fp32["stages_ms"]["features"] == {"median": 1.5, "min": 1.4, "max": 1.6}
    assert list(fp32)[-3:] == ["transformers_imported", "rss_ratio_vs_pipeline", "agreement"]


def test_a_failed_replay_run_has_no_measurement_keys_and_a_run_that_ran_has_them_beside() -> None:
    failed = ReplayRun("onnx/bf16", "onnx", "bf16", ok=False, error="no bf16")
    assert failed.as_json() == {
        "name": "onnx/bf16",
        "backend": "onnx",
        "precision": "bf16",
        "ok": False,
        "error": "no bf16",
    }
    result = ReplayResult(
        12.0, 11, 2.0, 5.5, 6.0, 1.0, 300.0, Percentiles(10.0, 20.0, 30.0), None, 11, 0, 2, 0
    )
    ran = ReplayRun("torch/fp32", "torch", "fp32", ok=True, error=None, result=result)
    keys = list(ran.as_json())
    assert keys[:6] == ["name", "backend", "precision", "ok", "error", "audio_seconds"]
    assert keys[-2:] == ["lost_frames", "windows_gated"] and "result" not in keys
    assert ran.as_json()["latency_ms"] == {"p50": 10.0, "p99": 20.0, "max": 30.0}
    settings = ReplaySettings(0.2, "generated", 44100, 2.0, 1.0, 3, 1, None)
    report = ReplayReport(None, CHECKPOINT, ENVIRONMENT, settings, (ran, failed))
    assert report.as_json()["runs"] == [ran.as_json(), failed.as_json()]
    assert report.as_json()["mode"] == "replay" and not report.ok
    text = format_replay(report)
    assert re.search(r"^onnx/bf16 +FAILED: no bf16$", text, re.MULTILINE)
    assert "MQTT off" in text


def test_targets_not_measured_say_why_and_render_as_not_applicable() -> None:
    failed = monitor_result(
        "onnx/int8",
        ok=False,
        error="cannot load",
        ms=None,
        rtf=None,
        speedup_vs_pipeline=None,
        front_end_fraction=None,
        rss_ratio_vs_pipeline=None,
    )
    report = compare_report(monitor_result(), failed)
    by_config = {(t.config, t.target.split()[0]): t for t in report.targets}
    assert by_config[("torch/fp32", "throughput")].met is True
    assert by_config[("onnx/int8", "throughput")].met is None
    assert by_config[("onnx/int8", "steady")].detail == "cannot load"
    assert not report.ok
    text = format_table(report)
    assert "onnx/int8    FAILED: cannot load" in text
    assert "[    n/a] onnx/int8    steady RSS <= 0.3x pipeline (torch fp32) (cannot load)" in text
    assert "[    met] torch/fp32   throughput >= 5x pipeline: 8" in text


def test_a_child_without_memory_reports_why_in_every_size() -> None:
    assert rss_mib(None) == RssMib(error="not measured")
    assert rss_mib(ChildMemory(ok=False, error="child process failed: boom")).steady is None
    measured = rss_mib(ChildMemory(ok=True, after_load=1.0, steady=3.0, peak=4.0))
    assert (measured.steady, measured.peak, measured.after_load, measured.error) == (
        3.0,
        4.0,
        1.0,
        None,
    )


def sources_result(k: int, dropped: int) -> SourcesResult:
    return SourcesResult(
        audio_seconds=60.0,
        wall_seconds=59.0,
        windows=59 * k - dropped,
        windows_by_source={f"room{i + 1}": 59 for i in range(k)},
        windows_per_second=(59 * k - dropped) / 59.0,
        cpu_seconds=20.0 * k,
        cpu_seconds_per_audio_hour_per_source=1200.0,
        latency_ms=Percentiles(45.0, 120.0, 150.0),
        windows_dropped=dropped,
        lost_frames=0,
        events=1,
        rss_after_mib=510.0,
        peak_rss_mib=None if k == 4 else 620.0,
    )


def sources_report() -> SourcesReport:
    settings = ReplaySettings(1.0, "generated, 44100 Hz", 44100, 10.0, 1.0, 30, 1, None)
    runs = (
        SourcesRun("torch/fp32", "torch", "fp32", 1, True, None, sources_result(1, 0)),
        SourcesRun("torch/fp32", "torch", "fp32", 4, True, None, sources_result(4, 7)),
        SourcesRun("onnx/bf16", "onnx", "bf16", 1, False, "no bf16"),
    )
    served = (
        SourcesServed("torch/fp32", "torch", "fp32", 1.0, 1),
        SourcesServed("onnx/bf16", "onnx", "bf16", 1.0, None),
    )
    return SourcesReport(None, CHECKPOINT, ENVIRONMENT, settings, (1, 4), runs, served)


def test_the_sources_text_has_a_row_per_run_and_the_largest_k_per_configuration() -> None:
    text = format_sources(sources_report())
    lines = text.splitlines()
    assert lines[0].startswith("audio-monitor bench --replay-minutes 1 --sources 1 4: ")
    assert "loads the model once" in text
    header = next(line for line in lines if line.startswith("config"))
    assert header.split() == [
        "config",
        "K",
        "windows",
        "win/s",
        "CPU",
        "s/audio",
        "h/source",
        "latency",
        "p50",
        "p99",
        "ms",
        "dropped",
        "lost",
        "frames",
        "RSS",
        "after",
        "peak",
        "(RSS",
        "in",
        "MiB)",
    ]
    one, four = (line.split() for line in lines if line.startswith("torch/fp32  "))
    assert one == ["torch/fp32", "1", "59", "1.00", "1200", "45", "120", "0", "0", "510", "620"]
    assert four[:2] == ["torch/fp32", "4"] and four[7] == "7" and four[-1] == "-"
    assert "onnx/bf16      1 FAILED: no bf16" in text
    assert "torch/fp32: largest K served without dropping windows at hop 1 s: 1" in lines
    assert "onnx/bf16: largest K served without dropping windows at hop 1 s: none" in lines


def test_the_sources_json_has_the_runs_flat_and_the_answer_per_configuration() -> None:
    report = sources_report()
    doc = json.loads(json.dumps(report.as_json()))
    assert list(doc) == [
        "mode",
        "note",
        "checkpoint",
        "environment",
        "replay",
        "sources",
        "runs",
        "served",
    ]
    assert doc["mode"] == "sources" and doc["sources"] == [1, 4] and not report.ok
    ran, _, failed = doc["runs"]
    assert tuple(ran) == SOURCES_RUN_KEYS
    assert ran["windows_by_source"] == {"room1": 59}
    assert ran["latency_ms"] == {"p50": 45.0, "p99": 120.0, "max": 150.0}
    assert failed == {
        "name": "onnx/bf16",
        "backend": "onnx",
        "precision": "bf16",
        "sources": 1,
        "ok": False,
        "error": "no bf16",
    }
    assert doc["served"][0] == {
        "name": "torch/fp32",
        "backend": "torch",
        "precision": "fp32",
        "hop_seconds": 1.0,
        "largest_sources": 1,
    }


def test_the_roofline_says_how_close_each_path_is_to_the_machines_peak() -> None:
    report = replace(compare_report(monitor_result()), roofline=Roofline(11.8, 100.0, 2048))
    text = format_table(report)
    assert "limit: the audio tower is 11.8 GFLOP per window; this machine's fp32 sgemm" in text
    assert "peaks at 100 GFLOP/s" in text
    # 11.8 GFLOP in 48 ms: 246 GFLOP/s, 246 % of the fp32 peak (int8 can pass it).
    assert re.search(
        r"torch/fp32 +audio tower 48\.0 ms = 246 GFLOP/s fp32-equivalent \(246% of that peak\)",
        text,
    )
    assert "limit:" not in format_table(replace(report, roofline=Roofline(None, 100.0, 2048)))


def test_an_auto_row_answers_the_targets_of_what_it_ran_as() -> None:
    auto = replace(monitor_result("onnx/int8", rss_ratio_vs_pipeline=0.21), name="auto→onnx/int8")
    targets = evaluate_targets([monitor_result(), auto])
    (rss,) = [t for t in targets if t.config == "onnx/int8" and "RSS" in t.target]
    assert (rss.value, rss.met) == (0.21, True)
    text = format_table(compare_report(monitor_result(), auto))
    assert "auto→onnx/int8" in text
