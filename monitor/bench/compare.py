"""The comparison: every path timed in turn in this process, memory in children, agreement."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monitor.bench.checkpoint import Checkpoint
from monitor.bench.environment import environment, load_average
from monitor.bench.memory import ChildMemory, ChildSpec, measure_memory
from monitor.bench.monitor_path import MonitorPath, MonitorRun, configurations, model_config
from monitor.bench.reference import ReferencePath, ReferenceRun
from monitor.bench.results import (
    Agreement,
    CompareReport,
    MonitorResult,
    ReferenceResult,
    Roofline,
    RssMib,
    WorkloadReport,
)
from monitor.bench.roofline import SGEMM_SIZE, sgemm_peak_gflops
from monitor.bench.stats import ratio, summary
from monitor.bench.targets import evaluate_targets, is_target_workload
from monitor.bench.workload import hop_or_default, make_workload
from monitor.config import DEFAULT_PROMPT_TEMPLATE
from monitor.errors import first_line

logger = logging.getLogger(__name__)

SETTLE_SECONDS = 0.05

TimedPath = ReferencePath | MonitorPath


def measure_interleaved(
    reference: ReferencePath,
    monitors: Sequence[MonitorPath],
    windows: int,
    batch: int,
    threads: int,
) -> None:
    """Load every path, then time them batch by batch in turn (the order rotating), so that
    a machine whose load changes during the run slows every path alike. A path that fails is
    recorded with its one-line error and dropped; the others go on."""
    paths: list[TimedPath] = [reference, *monitors]
    live: list[TimedPath] = []
    for path in paths:
        try:
            logger.info("loading %s", path.run.name)
            if isinstance(path, ReferencePath):
                path.load(threads)
            else:
                path.load(threads, batch)
            live.append(path)
        except Exception as err:
            _failed(path, err)
    rounds = [list(range(i, min(i + batch, windows))) for i in range(0, windows, batch)]
    for number, indices in enumerate(rounds):
        shift = number % len(live) if live else 0
        for path in live[shift:] + live[:shift]:
            # Thread pools spin for a moment after their work (OpenMP, ONNX Runtime): let the
            # previous path's go idle so they do not compete with this one.
            time.sleep(SETTLE_SECONDS)
            try:
                path.measure(indices)
            except Exception as err:
                _failed(path, err)
                live.remove(path)
        logger.info("timed batch %d/%d of %d path(s)", number + 1, len(rounds), len(live))
    for path in live:
        try:
            path.finish()
        except Exception as err:
            _failed(path, err)
    for path in paths:
        path.release()
    gc.collect()


def _failed(path: TimedPath, err: BaseException) -> None:
    path.run.ok = False
    path.run.error = first_line(err)
    path.release()
    logger.warning("%s failed: %s", path.run.name, path.run.error)


def agreement(run: MonitorRun, reference: ReferenceRun) -> Agreement:
    """Scores and embeddings of a monitor path against the pipeline's (empty if either failed)."""
    if not (run.ok and reference.ok) or run.scores is None or reference.scores is None:
        return Agreement()
    assert run.embeddings is not None and reference.embeddings is not None
    cosine = np.sum(run.embeddings * reference.embeddings, axis=1)
    return Agreement(
        max_abs_score_diff=float(np.max(np.abs(run.scores - reference.scores))),
        top1_agreement=float(
            np.mean(np.argmax(run.scores, axis=1) == np.argmax(reference.scores, axis=1))
        ),
        embedding_cosine_min=float(cosine.min()),
        embedding_cosine_mean=float(cosine.mean()),
    )


def rss_mib(memory: ChildMemory | None) -> RssMib:
    """A child's memory as reported; every size None, with the reason, when it has none."""
    if memory is None:
        return RssMib(error="not measured")
    if not memory.ok:
        return RssMib(error=memory.error)
    return RssMib(memory.steady, memory.peak, memory.after_load, memory.anon, memory.file)


def reference_result(
    reference: ReferenceRun, memory: ChildMemory | None, window_seconds: float
) -> ReferenceResult:
    ms = summary(reference.ms)
    return ReferenceResult(
        name="pipeline",
        ok=reference.ok,
        error=reference.error,
        load_seconds=reference.load_seconds,
        ms=ms,
        cpu_ms=summary(reference.cpu_ms),
        rtf=None if ms is None else ms.median / (window_seconds * 1000.0),
        rss_mib=rss_mib(memory),
    )


def monitor_result(
    run: MonitorRun,
    reference: ReferenceResult,
    memory: ChildMemory | None,
    window_seconds: float,
    agrees: Agreement,
) -> MonitorResult:
    ms = summary(run.ms)
    cpu_ms = summary(run.cpu_ms)
    stages = {name: summary(values) for name, values in run.stages.items()}
    tower = stages["audio_tower"]
    front = sum(s.median for s in (stages["resample"], stages["features"]) if s is not None)
    rss = rss_mib(memory)
    ref_ms, ref_cpu_ms = reference.ms, reference.cpu_ms
    return MonitorResult(
        name=run.name,
        backend=run.runs_as[0],
        precision=run.runs_as[1],
        ok=run.ok,
        error=run.error,
        load_seconds=run.load_seconds,
        text_embedding_seconds=run.text_embedding_seconds,
        ms=ms,
        cpu_ms=cpu_ms,
        stages_ms=stages,
        features_separate=run.features_separate,
        front_end_fraction=(
            ratio(front, tower.median) if tower is not None and run.features_separate else None
        ),
        rtf=None if ms is None else ms.median / (window_seconds * 1000.0),
        speedup_vs_pipeline=ratio(
            None if ref_ms is None else ref_ms.median, None if ms is None else ms.median
        ),
        speedup_min_vs_pipeline=ratio(
            None if ref_ms is None else ref_ms.min, None if ms is None else ms.min
        ),
        cpu_speedup_vs_pipeline=ratio(
            None if ref_cpu_ms is None else ref_cpu_ms.median,
            None if cpu_ms is None else cpu_ms.median,
        ),
        rss_mib=rss,
        torch_imported=None if memory is None else memory.torch_imported,
        transformers_imported=None if memory is None else memory.transformers_imported,
        rss_ratio_vs_pipeline=ratio(rss.steady, reference.rss_mib.steady),
        agreement=agrees,
    )


def run_compare(
    args: argparse.Namespace, checkpoint: Checkpoint, labels: Sequence[str], work_dir: Path
) -> CompareReport:
    """Timings and agreement in this process, memory in children; the whole report."""
    load_before = load_average()
    hop = hop_or_default(getattr(args, "hop_seconds", None), args.window_seconds)
    workload = make_workload(args.audio, args.windows, args.window_seconds, hop)
    configs = configurations(args.backend, args.precision)
    logger.info(
        "bench: %d windows x %g s, %d labels, pipeline and %s",
        args.windows,
        args.window_seconds,
        len(labels),
        ", ".join(f"{b}/{p}" for b, p in configs),
    )
    reference_path = ReferencePath(checkpoint, workload, labels)
    monitor_paths = [
        MonitorPath(checkpoint, b, p, workload, labels, args.device) for b, p in configs
    ]
    measure_interleaved(
        reference_path, monitor_paths, len(workload.windows), args.batch, args.threads
    )
    reference = reference_path.run
    windows_path = work_dir / "windows.npy"
    np.save(windows_path, np.stack(workload.windows))
    common = ChildSpec(
        kind="reference",
        windows=str(windows_path),
        source_rate_hz=workload.source_rate_hz,
        positions=workload.positions,
        starts=workload.starts,
        labels=list(labels),
        threads=args.threads,
        batch=args.batch,
        model=str(checkpoint.path),
    )
    ref_result = reference_result(
        reference, measure_memory(common, work_dir, "pipeline"), workload.window_seconds
    )
    monitor = []
    for path in monitor_paths:
        run = path.run
        memory = None
        if run.ok:
            # What auto resolved to: the child must not measure every candidate again.
            backend, precision = run.runs_as
            cfg = model_config(
                checkpoint, backend, precision, args.threads, args.batch, args.device
            )
            spec = dataclasses.replace(
                common, kind="monitor", model_config=cfg.model_dump(mode="json")
            )
            memory = measure_memory(spec, work_dir, run.name)
        agrees = agreement(run, reference)
        monitor.append(monitor_result(run, ref_result, memory, workload.window_seconds, agrees))
    roofline = Roofline(reference.tower_gflop, sgemm_peak_gflops(), SGEMM_SIZE)
    env = environment(args.threads, load_before)
    if reference.torch_threads is not None:
        env = dataclasses.replace(env, torch_threads=reference.torch_threads)
    return CompareReport(
        note=checkpoint.note,
        checkpoint=checkpoint.report(),
        environment=env,
        workload=WorkloadReport(
            windows=len(workload.windows),
            window_seconds=workload.window_seconds,
            hop_seconds=workload.hop_seconds,
            labels=len(labels),
            label_sets=1,
            template=DEFAULT_PROMPT_TEMPLATE,
            batch=args.batch,
            audio=workload.description,
            source_rate_hz=workload.source_rate_hz,
        ),
        reference=ref_result,
        monitor=tuple(monitor),
        targets=tuple(evaluate_targets(monitor)),
        targets_workload=is_target_workload(
            workload.window_seconds, len(labels), env.cpu_count, args.threads
        ),
        roofline=roofline,
    )
