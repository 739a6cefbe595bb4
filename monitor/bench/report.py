"""The bench's reports as readable text: they only render what the result dataclasses hold."""

from __future__ import annotations

from monitor.bench.results import (
    Agreement,
    CompareReport,
    Environment,
    HistoryBenchReport,
    MonitorResult,
    ReferenceResult,
    ReplayReport,
    SourcesReport,
)
from monitor.bench.targets import TARGET_CORES, TARGET_LABELS, TARGET_WINDOW_SECONDS

VERDICTS = {True: "met", False: "NOT MET", None: "n/a"}


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _times(value: float | None) -> str:
    return _fmt(value, ".2f") + "x" if value is not None else "-"


def cpu_line(env: Environment) -> str:
    """Which machine every figure below comes from (figures depend on the CPU's extensions)."""
    isa = " ".join(env.cpu_isa) or "no vector extension reported"
    return f"CPU: {env.cpu_model} ({isa}), {env.cpu_count} CPUs"


def _roofline_lines(report: CompareReport) -> list[str]:
    """The tower's work and this machine's fp32 matrix-product peak, and each path's share."""
    roof = report.roofline
    if roof is None or roof.tower_gflop_per_window is None:
        return []
    peak = roof.sgemm_peak_gflops
    lines = [
        "",
        f"limit: the audio tower is {roof.tower_gflop_per_window:.1f} GFLOP per window; "
        f"this machine's fp32 sgemm ({roof.sgemm_size}x{roof.sgemm_size}, "
        f"{report.environment.torch_threads} threads) peaks at {_fmt(peak, '.0f')} GFLOP/s",
    ]
    for m in report.monitor:
        tower = m.stages_ms.get("audio_tower") if m.ok else None
        achieved = None if tower is None else roof.achieved_gflops(tower.median)
        if tower is None or achieved is None:
            continue
        share = f" ({achieved / peak:.0%} of that peak)" if peak else ""
        lines.append(
            f"  {m.name:<12} audio tower {tower.median:.1f} ms = {achieved:.0f} GFLOP/s "
            f"fp32-equivalent{share}"
        )
    return lines


def format_table(report: CompareReport) -> str:
    """The comparison as readable text: both paths side by side, stages, targets."""
    work = report.workload
    env = report.environment
    load_before = None if env.load_average_before is None else list(env.load_average_before)
    load_after = None if env.load_average_after is None else list(env.load_average_after)
    lines = [
        f"audio-monitor bench: {work.windows} windows x {work.window_seconds:g} s "
        f"every {work.hop_seconds:g} s ({work.audio}), {work.labels} labels, "
        f"batch {work.batch}, "
        f"{env.torch_threads} torch threads on {env.cpu_count} CPUs "
        f"(load average before/after {load_before} / {load_after})",
        cpu_line(report.environment),
        f"checkpoint: {report.checkpoint.origin} {report.checkpoint.path}",
    ]
    if report.note:
        lines.append(report.note)
    rows: list[tuple[ReferenceResult | MonitorResult, MonitorResult | None]]
    rows = [(report.reference, None)]
    rows += [(m, m) for m in report.monitor]
    # Names such as "auto→onnx/int8" are longer than the usual "torch/fp32".
    width = max(12, *(len(row.name) for row, _ in rows))
    speed = (
        f"{'path':<{width}} {'ms/window median':>16} {'min':>8} {'max':>8} {'CPU ms':>8} "
        f"{'RTF':>7} {'speedup':>8} {'(min)':>7} {'CPU speedup':>11}"
    )
    lines += ["", speed, "-" * len(speed)]
    for row, mon in rows:
        if not row.ok or row.ms is None or row.rtf is None:
            lines.append(f"{row.name:<{width}} FAILED: {row.error}")
            continue
        ms, cpu = row.ms, row.cpu_ms
        lines.append(
            f"{row.name:<{width}} {ms.median:>16.1f} {ms.min:>8.1f} {ms.max:>8.1f} "
            f"{_fmt(None if cpu is None else cpu.median, '.1f'):>8} {row.rtf:>7.4f} "
            f"{_times(mon.speedup_vs_pipeline if mon else 1.0):>8} "
            f"{_times(mon.speedup_min_vs_pipeline if mon else 1.0):>7} "
            f"{_times(mon.cpu_speedup_vs_pipeline if mon else 1.0):>11}"
        )
    memory = (
        f"{'path':<{width}} {'RSS steady':>10} {'peak':>8} {'anon':>8} {'file':>8} {'ratio':>7} "
        f"{'max|dscore|':>11} {'top-1':>6} {'cos min':>9}"
    )
    lines += ["", memory + "   (MiB)", "-" * len(memory)]
    for row, mon in rows:
        if not row.ok:
            continue
        rss = row.rss_mib
        agree = mon.agreement if mon is not None else Agreement()
        if rss.error is None:
            sizes = (
                f"{_fmt(rss.steady, '.0f'):>10} {_fmt(rss.peak, '.0f'):>8} "
                f"{_fmt(rss.anon, '.0f'):>8} {_fmt(rss.file, '.0f'):>8} "
                f"{_times(mon.rss_ratio_vs_pipeline if mon else 1.0):>7}"
            )
        else:
            sizes = f"{'failed':>10} {'':>8} {'':>8} {'':>8} {'':>7}"
        lines.append(
            f"{row.name:<{width}} {sizes} "
            f"{_fmt(agree.max_abs_score_diff, '.2e'):>11} "
            f"{_fmt(agree.top1_agreement, '.0%'):>6} "
            f"{_fmt(agree.embedding_cosine_min, '.6f'):>9}"
        )
        if rss.error is not None:
            lines.append(f"{'':<{width}} memory: {rss.error}")
    ok_runs = [m for m in report.monitor if m.ok]
    if ok_runs:
        lines += [
            "",
            "monitor stages, ms per window (median): resample, features, audio tower, scoring",
        ]
        for m in ok_runs:
            med = {k: None if v is None else v.median for k, v in m.stages_ms.items()}
            features = _fmt(med["features"], ".1f") if m.features_separate else "(in tower)"
            lines.append(
                f"  {m.name:<{width}} resample {_fmt(med['resample'], '.1f')}  features {features}"
                f"  audio tower {_fmt(med['audio_tower'], '.1f')}  scoring "
                f"{_fmt(med['scoring'], '.3f')}  text embedding once "
                f"{_fmt(m.text_embedding_seconds, '.2f')} s  "
                f"load {_fmt(m.load_seconds, '.1f')} s"
            )
    lines += _roofline_lines(report)
    lines += [
        "",
        f"targets (for {TARGET_WINDOW_SECONDS:g} s windows, {TARGET_LABELS} labels, "
        f"{TARGET_CORES} cores):",
    ]
    if not report.targets_workload:
        lines.append("  (this run's workload differs: the verdicts below are indicative only)")
    for t in report.targets:
        value = "" if t.value is None else f": {t.value:.3g}"
        detail = f" ({t.detail})" if t.detail else ""
        lines.append(f"  [{VERDICTS[t.met]:>7}] {t.config:<12} {t.target}{value}{detail}")
    return "\n".join(lines) + "\n"


def format_replay(report: ReplayReport) -> str:
    """The replay as readable text: one row per configuration."""
    r = report.replay
    lines = [
        f"audio-monitor bench --replay-minutes {r.minutes:g}: {r.audio}, "
        f"{r.window_seconds:g} s windows every {r.hop_seconds:g} s, {r.labels} labels, "
        f"max batch {r.max_batch}, MQTT {r.mqtt or 'off'}",
        cpu_line(report.environment),
        f"checkpoint: {report.checkpoint.origin} {report.checkpoint.path}",
    ]
    if report.note:
        lines.append(report.note)
    lines.append("")
    header = (
        f"{'config':<17} {'windows':>7} {'gated':>6} {'win/s':>7} {'x realtime':>10} "
        f"{'CPU s/audio h':>13} {'latency p50':>11} {'p99 ms':>8} {'processing p50':>14} "
        f"{'p99 ms':>8}"
    )
    lines += [header, "-" * len(header)]
    for run in report.runs:
        result = run.result
        if not run.ok or result is None:
            lines.append(f"{run.name:<17} FAILED: {run.error}")
            continue
        lat, proc = result.latency_ms, result.processing_ms
        lines.append(
            f"{run.name:<17} {result.windows:>7} {_fmt(result.windows_gated, 'd'):>6} "
            f"{result.windows_per_second:>7.2f} "
            f"{result.speed_vs_realtime:>10.1f} {result.cpu_seconds_per_audio_hour:>13.0f} "
            f"{_fmt(None if lat is None else lat.p50, '.0f'):>11} "
            f"{_fmt(None if lat is None else lat.p99, '.0f'):>8} "
            f"{_fmt(None if proc is None else proc.p50, '.0f'):>14} "
            f"{_fmt(None if proc is None else proc.p99, '.0f'):>8}"
        )
    lines += [
        "",
        "latency: from the window's last sample written into the ring buffer to its scores "
        "handed to the outputs (includes waiting behind earlier windows: the file is replayed "
        "as fast as possible); processing: the same from when the worker could start on it.",
    ]
    return "\n".join(lines) + "\n"


def format_sources(report: SourcesReport) -> str:
    """The multi-source runs as readable text: one row per configuration and K, then the
    largest K each configuration served."""
    r = report.replay
    ks = " ".join(str(k) for k in report.sources)
    lines = [
        f"audio-monitor bench --replay-minutes {r.minutes:g} --sources {ks}: {r.audio}, "
        f"K real-time sources (room1..roomK) replaying it at once, {r.window_seconds:g} s "
        f"windows every {r.hop_seconds:g} s, {r.labels} labels, max batch {r.max_batch}, "
        f"MQTT {r.mqtt or 'off'}",
        cpu_line(report.environment),
        f"checkpoint: {report.checkpoint.origin} {report.checkpoint.path}",
        "each run is one daemon, which loads the model once and scores every source's windows "
        "with it, whatever K is (by construction; not a measurement); each configuration is "
        "first warmed up by a few untimed windows",
    ]
    if report.note:
        lines.append(report.note)
    lines.append("")
    header = (
        f"{'config':<12} {'K':>3} {'windows':>7} {'win/s':>7} {'CPU s/audio h/source':>20} "
        f"{'latency p50':>11} {'p99 ms':>8} {'dropped':>7} {'lost frames':>11} "
        f"{'RSS after':>9} {'peak':>6}"
    )
    lines += [header + "   (RSS in MiB)", "-" * len(header)]
    for run in report.runs:
        result = run.result
        if not run.ok or result is None:
            lines.append(f"{run.name:<12} {run.sources:>3} FAILED: {run.error}")
            continue
        lat = result.latency_ms
        lines.append(
            f"{run.name:<12} {run.sources:>3} {result.windows:>7} "
            f"{result.windows_per_second:>7.2f} "
            f"{result.cpu_seconds_per_audio_hour_per_source:>20.0f} "
            f"{_fmt(None if lat is None else lat.p50, '.0f'):>11} "
            f"{_fmt(None if lat is None else lat.p99, '.0f'):>8} "
            f"{result.windows_dropped:>7} {result.lost_frames:>11} "
            f"{_fmt(result.rss_after_mib, '.0f'):>9} {_fmt(result.peak_rss_mib, '.0f'):>6}"
        )
    lines.append("")
    for served in report.served:
        k = "none" if served.largest_sources is None else str(served.largest_sources)
        lines.append(
            f"{served.name}: largest K served without dropping windows at hop "
            f"{served.hop_seconds:g} s: {k}"
        )
    lines += [
        "",
        "latency: from a window's last sample written into its source's ring buffer to its "
        "scores and events being ready; dropped: windows skipped because scoring lagged "
        "behind real time, summed over the sources; CPU: the whole process's CPU time from "
        "streaming start to the last window, per source and audio hour; peak: the process's "
        "peak RSS during the run, model load included.",
    ]
    return "\n".join(lines) + "\n"


def format_history(report: HistoryBenchReport) -> str:
    """The history bench as a few lines, each figure beside its target."""
    runs = ", ".join(f"{t:.3f}" for t in report.search_seconds)
    serial = ", ".join(f"{t:.3f}" for t in report.search_serial_seconds)
    return (
        f"history: {report.days:g} day(s) of {report.sources} source at a "
        f"{report.hop_seconds:g} s hop = {report.windows} windows of {report.dim}-d float16\n"
        f"CPU: {report.cpu_model}, {report.cpu_count} CPU(s); load after: "
        f"{report.load_average_after}\n"
        f"search (read + score every window, top 10), {report.search_jobs} process(es): median "
        f"{report.search_median_seconds:.3f} s (target <= {report.search_target_seconds:g} s); "
        f"runs: {runs}\n"
        f"search in 1 process (--jobs 1), alternated with the above: median "
        f"{report.search_serial_median_seconds:.3f} s; runs: {serial}\n"
        f"file: {report.file_megabytes:.1f} MB = {report.megabytes_per_source_day:.1f} MB per "
        f"source per day (target <= {report.megabytes_target:g})\n"
        f"insert: {report.insert_ms_per_window:.4f} ms per window on the writer thread "
        f"(flushes of {report.flush_windows} windows); on_embeddings on the worker thread: "
        f"{report.submit_us_per_batch:.1f} us per batch of 4\n"
    )
