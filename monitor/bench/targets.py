"""The performance targets, judged against the configurations a comparison measured."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.bench.results import MonitorResult, Target

# The targets hold for this workload only.
TARGET_WINDOW_SECONDS = 10.0
TARGET_LABELS = 30
TARGET_CORES = 2
TARGET_SPEEDUP_FP32 = 5.0
TARGET_SPEEDUP_REDUCED = 10.0
TARGET_FRONT_END_FRACTION = 0.10
TARGET_RSS_FP32 = 0.6
TARGET_RSS_ONNX_INT8 = 0.3


def is_target_workload(
    window_seconds: float, labels: int, cpu_count: int | None, threads: int
) -> bool:
    """Whether a run's workload is the one the targets are set for (else they are indicative)."""
    return (
        window_seconds == TARGET_WINDOW_SECONDS
        and labels == TARGET_LABELS
        and TARGET_CORES in (cpu_count, threads)
    )


def _target(
    target: str, config: str, value: float | None, limit: float, at_least: bool, why: str = ""
) -> Target:
    met = None if value is None else (value >= limit if at_least else value <= limit)
    return Target(target, config, value, limit, met, why if value is None else "")


def evaluate_targets(monitor: Sequence[MonitorResult]) -> list[Target]:
    """Each target against the configurations measured (met None = not measured)."""
    by_name = {m.name: m for m in monitor}
    for m in monitor:  # an auto row (auto→onnx/int8) also answers for what it ran as
        by_name.setdefault(f"{m.backend}/{m.precision}", m)
    targets: list[Target] = []

    def missing(name: str) -> str:
        run = by_name.get(name)
        if run is None:
            return f"{name} not measured"
        return run.error or "no value"

    fp32 = by_name.get("torch/fp32")
    targets.append(
        _target(
            f"throughput >= {TARGET_SPEEDUP_FP32:g}x pipeline",
            "torch/fp32",
            None if fp32 is None else fp32.speedup_vs_pipeline,
            TARGET_SPEEDUP_FP32,
            True,
            missing("torch/fp32"),
        )
    )
    reduced = [m for m in monitor if m.precision in ("bf16", "int8")]
    for run in reduced:
        targets.append(
            _target(
                f"throughput >= {TARGET_SPEEDUP_REDUCED:g}x pipeline",
                run.name,
                run.speedup_vs_pipeline,
                TARGET_SPEEDUP_REDUCED,
                True,
                missing(run.name),
            )
        )
    if not reduced:
        targets.append(
            _target(
                f"throughput >= {TARGET_SPEEDUP_REDUCED:g}x pipeline",
                "bf16 or int8",
                None,
                TARGET_SPEEDUP_REDUCED,
                True,
                "not measured: add --precision bf16 int8",
            )
        )
    for run in monitor:
        why = missing(run.name)
        if run.ok and not run.features_separate:
            why = "the runner does not expose its front end apart from the audio tower"
        targets.append(
            _target(
                f"front end (resample + features) < {TARGET_FRONT_END_FRACTION:.0%} of audio tower",
                run.name,
                run.front_end_fraction,
                TARGET_FRONT_END_FRACTION,
                False,
                why,
            )
        )
    for name, limit in (("torch/fp32", TARGET_RSS_FP32), ("onnx/int8", TARGET_RSS_ONNX_INT8)):
        measured = by_name.get(name)
        why = missing(name)
        if measured is not None and measured.ok and measured.rss_ratio_vs_pipeline is None:
            why = measured.rss_mib.error or "reference RSS not measured"
        targets.append(
            _target(
                f"steady RSS <= {limit:g}x pipeline (torch fp32)",
                name,
                None if measured is None else measured.rss_ratio_vs_pipeline,
                limit,
                False,
                why,
            )
        )
    return targets
