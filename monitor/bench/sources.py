"""Many real-time sources through one daemon: how many it serves without dropping windows."""

from __future__ import annotations

import argparse
import gc
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from monitor.bench.checkpoint import Checkpoint
from monitor.bench.environment import environment, load_average
from monitor.bench.monitor_path import configurations
from monitor.bench.replay import (
    daemon_config,
    parse_mqtt,
    replay_settings,
    run_observed,
    write_replay_audio,
)
from monitor.bench.results import (
    SourcesReport,
    SourcesResult,
    SourcesRun,
    SourcesServed,
)
from monitor.bench.stats import memory_mib, percentiles, reset_peak_rss
from monitor.bench.workload import DEFAULT_HOP_SECONDS
from monitor.config import Config
from monitor.errors import first_line

logger = logging.getLogger(__name__)

SOURCE_ID_PREFIX = "room"
# Windows scored untimed before a configuration's runs: a process's first inferences are slow
# (lazy initialisation, first kernel choices), which a long-running daemon pays once at start
# but which would otherwise land on the first run alone and could drop windows there.
WARMUP_WINDOWS = 3


def sources_hop(hop_seconds: float | None) -> float:
    """--hop-seconds, else 1 s: the hop at which "how many rooms" is asked, whatever the
    window (unlike the single replay, which shortens the hop to a shorter window)."""
    return DEFAULT_HOP_SECONDS if hop_seconds is None else float(hop_seconds)


def source_counts(counts: Sequence[int]) -> tuple[int, ...]:
    """--sources as the Ks to run: each once, ascending, so the runs read as a scale."""
    return tuple(sorted(set(counts)))


def sources_section(count: int, wav: Path) -> dict[str, Any]:
    """`sources:` for K real-time file sources room1..roomK, all replaying the same file: each
    opens its own handle and paces itself, as K rooms' microphones would deliver audio."""
    return {
        "sources": [
            {"type": "file", "id": f"{SOURCE_ID_PREFIX}{i}", "path": str(wav), "realtime": True}
            for i in range(1, count + 1)
        ]
    }


def sources_once(config: Config, count: int, audio_seconds: float) -> SourcesResult:
    """Run the daemon in-process with the config's K real-time sources until they end."""
    # The peak is per process: started afresh here so that it is this run's (model included).
    isolated = reset_peak_rss()
    observed = run_observed(config)
    recorder, snapshot = observed.recorder, observed.snapshot
    latencies = []
    for (source_id, end), (done, _cpu) in recorder.outputs.items():
        written = recorder.written_at(source_id, end)
        if written is not None:
            latencies.append((done - written) * 1000.0)
    last_mono, last_cpu = max(recorder.outputs.values())
    wall = max(1e-9, last_mono - observed.started_monotonic)
    cpu = last_cpu - observed.started_cpu
    memory = memory_mib()
    return SourcesResult(
        audio_seconds=audio_seconds,
        wall_seconds=wall,
        windows=len(recorder.outputs),
        windows_by_source={s.source_id: s.worker.windows_scored for s in snapshot.sources},
        windows_per_second=len(recorder.outputs) / wall,
        cpu_seconds=cpu,
        cpu_seconds_per_audio_hour_per_source=cpu * 3600.0 / (count * audio_seconds),
        latency_ms=percentiles(latencies),
        windows_dropped=sum(s.worker.windows_skipped_lagging for s in snapshot.sources),
        lost_frames=snapshot.lost_frames,
        events=snapshot.worker.events,
        rss_after_mib=memory.rss,
        peak_rss_mib=memory.peak if isolated else None,
    )


def warm_up(
    checkpoint: Checkpoint,
    backend: str,
    precision: str,
    args: argparse.Namespace,
    labels: Sequence[str],
    wav: Path,
    hop_seconds: float,
    work_dir: Path,
) -> None:
    """One short daemon run on `wav`, as fast as it scores and untimed; a failure is only
    logged (the measured runs will fail the same way and say so)."""
    name = f"{backend}/{precision}"
    source = {"type": "file", "id": "warmup", "path": str(wav), "realtime": False}
    try:
        config = daemon_config(
            checkpoint,
            backend,
            precision,
            args,
            labels,
            {"source": source},
            hop_seconds,
            None,
            work_dir / f"outbox-warmup-{backend}-{precision}",
        )
        logger.info("%s: warming up on %d windows, untimed", name, WARMUP_WINDOWS)
        run_observed(config)
    except Exception as err:
        logger.warning("%s: warm-up failed: %s", name, first_line(err))


def largest_served(runs: Sequence[SourcesRun], hop_seconds: float) -> tuple[SourcesServed, ...]:
    """Per backend/precision, the largest K whose run dropped no window; a failed run served
    nothing. Taken literally: a larger K that happened not to drop counts even if a smaller
    one dropped (the table shows every run, so such noise is visible there)."""
    served = []
    for name in dict.fromkeys(run.name for run in runs):
        mine = [run for run in runs if run.name == name]
        clean = [
            run.sources
            for run in mine
            if run.ok and run.result is not None and run.result.windows_dropped == 0
        ]
        first = mine[0]
        served.append(
            SourcesServed(
                name, first.backend, first.precision, hop_seconds, max(clean, default=None)
            )
        )
    return tuple(served)


def run_sources(
    args: argparse.Namespace, checkpoint: Checkpoint, labels: Sequence[str], work_dir: Path
) -> SourcesReport:
    """Each configuration with each K of --sources: K real-time sources in one daemon."""
    load_before = load_average()
    mqtt = parse_mqtt(args.mqtt)
    seconds = float(args.replay_minutes) * 60.0
    hop = sources_hop(args.hop_seconds)
    counts = source_counts(args.sources)
    # Written once; every source of every run reads it.
    wav, rate, what, audio_seconds = write_replay_audio(args, seconds, work_dir / "replay.wav")
    warmup_seconds = args.window_seconds + (WARMUP_WINDOWS - 1) * hop
    warmup_wav = write_replay_audio(args, warmup_seconds, work_dir / "warmup.wav")[0]
    plan = [(b, p, k) for b, p in configurations(args.backend, args.precision) for k in counts]
    logger.info(
        "%d real-time run(s) of %g min each: about %g min of wall time in all",
        len(plan),
        round(audio_seconds / 60, 2),
        round(len(plan) * audio_seconds / 60, 2),
    )
    runs = []
    peaks: list[float | None] = []  # the process's, before each run resets it
    for number, (backend, precision, count) in enumerate(plan, start=1):
        name = f"{backend}/{precision}"
        if count == counts[0]:
            warm_up(checkpoint, backend, precision, args, labels, warmup_wav, hop, work_dir)
        logger.info(
            "run %d/%d: %s with %d real-time source(s), %g min of audio each",
            number,
            len(plan),
            name,
            count,
            round(audio_seconds / 60, 2),
        )
        peaks.append(memory_mib().peak)
        try:
            config = daemon_config(
                checkpoint,
                backend,
                precision,
                args,
                labels,
                sources_section(count, wav),
                hop,
                mqtt,
                work_dir / f"outbox-{backend}-{precision}-{count}",
            )
            result = sources_once(config, count, audio_seconds)
            run = SourcesRun(name, backend, precision, count, ok=True, error=None, result=result)
            latency = result.latency_ms
            logger.info(
                "run %d/%d: %s with %d source(s): %d windows, %d dropped, latency p99 %s ms",
                number,
                len(plan),
                name,
                count,
                result.windows,
                result.windows_dropped,
                "-" if latency is None else f"{latency.p99:.0f}",
            )
        except Exception as err:
            run = SourcesRun(name, backend, precision, count, ok=False, error=first_line(err))
            logger.warning("%s with %d source(s) failed: %s", name, count, run.error)
        gc.collect()
        runs.append(run)
    env = environment(args.threads, load_before)
    known = [p for p in [*peaks, env.bench_peak_rss_mib] if p is not None]
    return SourcesReport(
        note=checkpoint.note,
        checkpoint=checkpoint.report(),
        # Each run restarted the peak: the whole bench's is the largest of them.
        environment=replace(env, bench_peak_rss_mib=max(known, default=None)),
        replay=replay_settings(args, what, rate, hop, len(labels), mqtt),
        sources=counts,
        runs=tuple(runs),
        served=largest_served(runs, hop),
    )
