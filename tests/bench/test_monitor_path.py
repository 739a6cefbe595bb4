"""The monitor's paths the bench measures: which configurations, and how auto rows are named."""

from __future__ import annotations

from monitor.bench.monitor_path import MonitorRun, configurations


def test_precision_auto_chooses_among_every_backend_unless_backends_are_given() -> None:
    assert configurations(None, ["auto", "fp32", "int8"]) == [
        ("auto", "auto"),
        ("torch", "fp32"),
        ("torch", "int8"),
    ]
    assert configurations(["torch", "onnx"], ["auto", "fp32"]) == [
        ("torch", "auto"),
        ("torch", "fp32"),
        ("onnx", "auto"),
        ("onnx", "fp32"),
    ]


def test_an_auto_row_is_named_by_what_it_resolved_to() -> None:
    auto = MonitorRun("auto", "auto")
    assert auto.name == "auto"  # not loaded (or failed): nothing resolved
    auto.resolved = ("onnx", "int8")
    assert (auto.name, auto.runs_as) == ("auto→onnx/int8", ("onnx", "int8"))
    within = MonitorRun("torch", "auto", resolved=("torch", "fp32"))
    assert within.name == "torch/auto→torch/fp32"
    plain = MonitorRun("torch", "int8")
    assert (plain.name, plain.runs_as) == ("torch/int8", ("torch", "int8"))
