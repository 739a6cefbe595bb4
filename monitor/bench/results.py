"""The bench's reports as frozen dataclasses; their JSON is `dataclasses.asdict` of them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from monitor.bench.stats import Percentiles, Summary

# The field order of every class below is the key order of the JSON report.


@dataclass(frozen=True)
class CheckpointReport:
    """What both paths loaded, and why it is not the hub checkpoint when it is not."""

    origin: str  # "directory", "hub" or "random"
    path: str
    random_weights: bool
    config_dir: str | None  # where a random checkpoint's architecture came from
    fallback_reason: str | None  # why the hub checkpoint was not used


@dataclass(frozen=True)
class Environment:
    """The machine and versions; the load averages show whether something else competed."""

    cpu_count: int | None
    cpu_model: str
    cpu_isa: tuple[str, ...]  # speed-relevant vector extensions (monitor.model.cpu)
    torch_threads: int | None
    python: str
    platform: str
    versions: dict[str, str | None]
    bench_peak_rss_mib: float | None
    load_average_before: tuple[float, ...] | None
    load_average_after: tuple[float, ...] | None


@dataclass(frozen=True)
class RssMib:
    """One path's memory in MiB, measured alone in a child process (error: why not)."""

    steady: float | None = None
    peak: float | None = None
    after_load: float | None = None
    anon: float | None = None
    file: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Agreement:
    """How closely a monitor path's scores and audio embeddings match the pipeline's."""

    max_abs_score_diff: float | None = None
    top1_agreement: float | None = None
    embedding_cosine_min: float | None = None
    embedding_cosine_mean: float | None = None


@dataclass(frozen=True)
class ReferenceResult:
    """The transformers pipeline's timings and memory."""

    name: str
    ok: bool
    error: str | None
    load_seconds: float | None
    ms: Summary | None
    cpu_ms: Summary | None
    rtf: float | None
    rss_mib: RssMib


@dataclass(frozen=True)
class MonitorResult:
    """One backend/precision of the monitor's path: timings, stages, memory, agreement."""

    name: str
    backend: str
    precision: str
    ok: bool
    error: str | None
    load_seconds: float | None
    text_embedding_seconds: float | None
    ms: Summary | None
    cpu_ms: Summary | None
    stages_ms: dict[str, Summary | None]  # resample, features, audio_tower, scoring
    features_separate: bool
    front_end_fraction: float | None
    rtf: float | None
    speedup_vs_pipeline: float | None
    # Fastest against fastest: what an otherwise idle machine gets.
    speedup_min_vs_pipeline: float | None
    # CPU time is distorted less by other processes than wall time: the same in CPU time.
    cpu_speedup_vs_pipeline: float | None
    rss_mib: RssMib
    # Whether the child process running this path ever imported torch (onnx: it must not).
    torch_imported: bool | None
    transformers_imported: bool | None
    rss_ratio_vs_pipeline: float | None
    agreement: Agreement


@dataclass(frozen=True)
class Target:
    """One performance target for one configuration (met None: not measured, see detail)."""

    target: str
    config: str
    value: float | None
    limit: float
    met: bool | None
    detail: str


@dataclass(frozen=True)
class WorkloadReport:
    """The windows and labels both paths scored."""

    windows: int
    window_seconds: float
    hop_seconds: float
    labels: int
    label_sets: int
    template: str
    batch: int
    audio: str
    source_rate_hz: int


@dataclass(frozen=True)
class Roofline:
    """The machine's limit beside the timings: work per window and a measured fp32 peak."""

    tower_gflop_per_window: float | None  # counted on the reference model (fp32)
    sgemm_peak_gflops: float | None  # median of a 2048x2048 fp32 torch.mm here
    sgemm_size: int

    def achieved_gflops(self, tower_ms: float | None) -> float | None:
        """The tower's GFLOP/s at `tower_ms` per window (int8 and bf16: fp32-equivalent)."""
        if self.tower_gflop_per_window is None or not tower_ms:
            return None
        return self.tower_gflop_per_window / (tower_ms / 1000.0)


@dataclass(frozen=True)
class CompareReport:
    """`audio-monitor bench`: the monitor's paths against the pipeline, with the targets."""

    mode: str = field(default="compare", init=False)
    note: str | None
    checkpoint: CheckpointReport
    environment: Environment
    workload: WorkloadReport
    reference: ReferenceResult
    monitor: tuple[MonitorResult, ...]
    targets: tuple[Target, ...]
    targets_workload: bool  # whether the workload is the one the targets are set for
    roofline: Roofline | None = None

    @property
    def ok(self) -> bool:
        """Whether every path ran."""
        return self.reference.ok and all(m.ok for m in self.monitor)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReplaySettings:
    """What a replay fed the daemon."""

    minutes: float
    audio: str
    source_rate_hz: int
    window_seconds: float
    hop_seconds: float
    labels: int
    max_batch: int
    mqtt: str | None  # host:port, None when the daemon published nowhere


@dataclass(frozen=True)
class ReplayResult:
    """The daemon's throughput and latencies over one replay."""

    audio_seconds: float
    windows: int
    wall_seconds: float
    windows_per_second: float
    speed_vs_realtime: float
    cpu_seconds: float
    cpu_seconds_per_audio_hour: float
    latency_ms: Percentiles | None
    processing_ms: Percentiles | None
    windows_scored: int | None
    windows_skipped_lagging: int | None
    events: int | None
    lost_frames: int | None
    windows_gated: int | None = None  # carried by the change gate, no inference


def _flattened(run: Any, result: Any) -> dict[str, Any]:
    """A run dataclass's fields, `result` replaced by the result's own fields (if any)."""
    out = asdict(run)
    del out["result"]
    if result is not None:
        out.update(asdict(result))
    return out


@dataclass(frozen=True)
class ReplayRun:
    """One backend/precision replayed: its result, or the one-line error that stopped it."""

    name: str
    backend: str
    precision: str
    ok: bool
    error: str | None
    result: ReplayResult | None = None

    def as_json(self) -> dict[str, Any]:
        """The run's fields with its result's beside them (a failed run has no result keys)."""
        return _flattened(self, self.result)


@dataclass(frozen=True)
class ReplayReport:
    """`audio-monitor bench --replay-minutes`: the whole daemon on a replayed file."""

    mode: str = field(default="replay", init=False)
    note: str | None
    checkpoint: CheckpointReport
    environment: Environment
    replay: ReplaySettings
    runs: tuple[ReplayRun, ...]

    @property
    def ok(self) -> bool:
        """Whether every configuration ran."""
        return all(run.ok for run in self.runs)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["runs"] = [run.as_json() for run in self.runs]
        return out


@dataclass(frozen=True)
class SourcesResult:
    """The daemon serving K real-time sources at once, over one run."""

    audio_seconds: float  # replayed by each source
    wall_seconds: float  # from streaming started to the last window scored
    windows: int  # every source's windows handed on by the worker
    windows_by_source: dict[str, int]  # windows scored by the model, per source id
    windows_per_second: float  # every source's together
    cpu_seconds: float  # the whole process's, over the same span as wall_seconds
    cpu_seconds_per_audio_hour_per_source: float
    latency_ms: Percentiles | None  # last sample into its ring buffer -> scores ready
    windows_dropped: int  # windows_skipped_lagging, summed over the sources
    lost_frames: int
    events: int
    rss_after_mib: float | None  # VmRSS once the run has ended
    peak_rss_mib: float | None  # the process's peak during this run; None: not isolable


@dataclass(frozen=True)
class SourcesRun:
    """One backend/precision with K sources: its result, or the one-line error that stopped it."""

    name: str
    backend: str
    precision: str
    sources: int
    ok: bool
    error: str | None
    result: SourcesResult | None = None

    def as_json(self) -> dict[str, Any]:
        """The run's fields with its result's beside them (a failed run has no result keys)."""
        return _flattened(self, self.result)


@dataclass(frozen=True)
class SourcesServed:
    """One backend/precision's answer: the largest K whose run dropped no window."""

    name: str
    backend: str
    precision: str
    hop_seconds: float
    largest_sources: int | None  # None: even the smallest K dropped windows (or failed)


@dataclass(frozen=True)
class SourcesReport:
    """`audio-monitor bench --replay-minutes N --sources K...`: K real-time sources, one daemon."""

    mode: str = field(default="sources", init=False)
    note: str | None
    checkpoint: CheckpointReport
    environment: Environment
    replay: ReplaySettings
    sources: tuple[int, ...]  # every K run, ascending
    runs: tuple[SourcesRun, ...]
    served: tuple[SourcesServed, ...]

    @property
    def ok(self) -> bool:
        """Whether every run ran (dropping windows is a result, not a failure)."""
        return all(run.ok for run in self.runs)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["runs"] = [run.as_json() for run in self.runs]
        return out


@dataclass(frozen=True)
class HistoryBenchReport:
    """`bench --history-days`: the real writer filling a file, the real search path reading it."""

    cpu_model: str
    cpu_count: int | None
    days: float
    sources: int
    windows: int  # per source
    dim: int
    hop_seconds: float
    flush_windows: int  # windows per source per flush (the daemon's FLUSH_SECONDS of windows)
    file_megabytes: float
    megabytes_per_source_day: float
    insert_ms_per_window: float  # writer thread: rows built and written, per window
    submit_us_per_batch: float  # worker thread: on_embeddings (queueing only), per batch of 4
    search_jobs: int  # processes of the search runs (search's default on this machine)
    search_seconds: tuple[float, ...]  # each run: read and score every window, rank the top 10
    search_median_seconds: float
    search_serial_seconds: tuple[float, ...]  # the same in one process (--jobs 1), alternated
    search_serial_median_seconds: float
    search_target_seconds: float
    megabytes_target: float
    load_average_after: tuple[float, ...] | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)
