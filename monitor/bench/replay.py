"""Replay: the whole daemon on a file read as fast as possible; throughput and latencies."""

from __future__ import annotations

import argparse
import gc
import itertools
import logging
import time
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from monitor.audio.ringbuffer import RingBuffer
from monitor.audio.source import Source, SourceStats, StreamFormat
from monitor.bench.checkpoint import Checkpoint
from monitor.bench.environment import environment, load_average
from monitor.bench.monitor_path import configurations, model_config
from monitor.bench.results import ReplayReport, ReplayResult, ReplayRun, ReplaySettings
from monitor.bench.stats import percentiles
from monitor.bench.workload import bench_label_set, hop_or_default, replay_audio
from monitor.config import Config, SourceConfig
from monitor.errors import ConfigError, ModelError, first_line
from monitor.frames import Event, Window
from monitor.pipeline.worker import ScoringTiming

if TYPE_CHECKING:
    from monitor.service.health import Snapshot

logger = logging.getLogger(__name__)


class Recorder:
    """Times of each source's ring-buffer writes and of each window's scoring being done, for
    latencies; windows are keyed by (source id, window end index), so sources never mix.

    The daemon's observer: it hears when streaming starts and about every batch scored.
    """

    def __init__(self) -> None:
        # source id -> (written_frames after each write, time.monotonic() just before it)
        self.writes: dict[str, tuple[list[int], list[float]]] = {}
        # (source id, window end index) -> (monotonic, process CPU) when its scores were ready
        self.outputs: dict[tuple[str, int], tuple[float, float]] = {}
        self.started: tuple[float, float] | None = None  # (monotonic, cpu) as streaming starts

    def track(self, source_id: str) -> None:
        """Make room for a source's writes before its thread starts (no dict growth later)."""
        self.writes.setdefault(source_id, ([], []))

    def wrote(self, source_id: str, written_frames: int, monotonic: float) -> None:
        frames, times = self.writes[source_id]
        frames.append(written_frames)
        times.append(monotonic)

    def written_at(self, source_id: str, end_index: int) -> float | None:
        """When the write holding frame `end_index - 1` of the source began (None: never)."""
        frames, times = self.writes.get(source_id, ([], []))
        i = bisect_left(frames, end_index)
        return times[i] if i < len(times) else None

    def on_streaming_started(self) -> None:
        self.started = (time.monotonic(), time.process_time())

    def on_scored(
        self, windows: Sequence[Window], events: Sequence[Event], timing: ScoringTiming
    ) -> None:
        cpu = time.process_time()
        for window in windows:
            self.outputs[(window.source_id, window.end_index)] = (timing.finished_monotonic, cpu)


class _RecordingRing:
    """What a source writes through: the daemon's ring buffer, with write times noted."""

    def __init__(self, ring: RingBuffer, recorder: Recorder, source_id: str) -> None:
        self._ring = ring
        self._recorder = recorder
        self._source_id = source_id

    def write(self, block: np.ndarray, wall_time_end: float | None = None) -> None:
        # Stamped before the write: the write wakes the worker, which could otherwise finish
        # a window before its write was stamped (a negative latency).
        now = time.monotonic()
        self._ring.write(block, wall_time_end)
        self._recorder.wrote(self._source_id, self._ring.written_frames, now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ring, name)


class RecordingSource(Source):
    """The daemon's own source, writing through a _RecordingRing."""

    def __init__(self, inner: Source, recorder: Recorder) -> None:
        self.inner = inner
        self.recorder = recorder
        self.source_id = inner.source_id
        recorder.track(inner.source_id)

    def open(self) -> StreamFormat:
        return self.inner.open()

    def start(self, ring: RingBuffer) -> None:
        self.inner.start(cast(RingBuffer, _RecordingRing(ring, self.recorder, self.source_id)))

    def stop(self) -> None:
        self.inner.stop()

    @property
    def finished(self) -> bool:
        return self.inner.finished

    @property
    def error(self) -> BaseException | None:
        return self.inner.error

    def stats(self) -> SourceStats:
        return self.inner.stats()


def parse_mqtt(spec: str | None) -> tuple[str, int] | None:
    """--mqtt host:port as (host, port); None when not given."""
    if not spec:
        return None
    host, _, port = spec.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--mqtt {spec}: expected host:port, e.g. localhost:1883")
    return host, int(port)


def daemon_config(
    checkpoint: Checkpoint,
    backend: str,
    precision: str,
    args: argparse.Namespace,
    labels: Sequence[str],
    sources: dict[str, Any],
    hop_seconds: float,
    mqtt: tuple[str, int] | None,
    outbox_dir: Path,
    change_gate: bool = False,
) -> Config:
    """The daemon's config for one replay; `sources` is its `source:` or `sources:` section;
    `change_gate`: window.change_gate on, at its defaults."""
    model = model_config(checkpoint, backend, precision, args.threads, args.batch, args.device)
    data: dict[str, Any] = {
        "model": model.model_dump(),
        **sources,
        "window": {
            "seconds": args.window_seconds,
            "hop_seconds": hop_seconds,
            "change_gate": {"enabled": change_gate},
        },
        "label_sets": [bench_label_set(labels).model_dump()],
        "mqtt": {
            "enabled": mqtt is not None,
            "host": mqtt[0] if mqtt else "localhost",
            "port": mqtt[1] if mqtt else 1883,
            "topic_prefix": "audio-monitor-bench",
            "device_id": "bench",
            "outbox": {"directory": str(outbox_dir)},
        },
        "output": {"json_lines": False},
    }
    try:
        return Config.model_validate(data)
    except ValueError as err:
        raise ConfigError(f"bench --replay-minutes: {first_line(err)}") from err


@dataclass(frozen=True)
class Observed:
    """One daemon run as the recorder saw it, with the daemon's final counters."""

    recorder: Recorder
    snapshot: Snapshot
    started_monotonic: float  # as streaming started: after the model loaded
    started_cpu: float  # time.process_time() then


def run_observed(config: Config) -> Observed:
    """Run the daemon in-process until its file sources are drained, every source recorded."""
    from monitor.service.daemon import Daemon
    from monitor.service.notify import SystemdNotifier
    from monitor.service.pipeline import make_source

    recorder = Recorder()

    def source_factory(cfg: SourceConfig) -> Source:
        return RecordingSource(make_source(cfg), recorder)

    daemon = Daemon(
        config,
        source_factory=source_factory,
        notifier=SystemdNotifier(environ={}),
        observer=recorder,
    )
    worker_log = logging.getLogger("monitor.pipeline.worker")
    level = worker_log.level
    worker_log.setLevel(logging.WARNING)  # one INFO line per event would flood a long replay
    try:
        daemon.run()
    finally:
        worker_log.setLevel(level)
    snapshot = daemon.snapshot()
    if snapshot is None or recorder.started is None or not recorder.outputs:
        raise ModelError("the daemon scored no window")
    return Observed(recorder, snapshot, *recorder.started)


def replay_once(config: Config, audio_seconds: float) -> ReplayResult:
    """Run the daemon in-process on the config's file; throughput and latencies."""
    observed = run_observed(config)
    recorder, snapshot = observed.recorder, observed.snapshot
    start_mono, start_cpu = observed.started_monotonic, observed.started_cpu
    keys = sorted(recorder.outputs)  # one source: in stream order
    latencies, processing = [], []
    previous_done = start_mono
    for source_id, end in keys:
        done, _cpu = recorder.outputs[(source_id, end)]
        written = recorder.written_at(source_id, end)
        if written is not None:
            latencies.append((done - written) * 1000.0)
            processing.append((done - max(written, previous_done)) * 1000.0)
        previous_done = done
    last_mono, last_cpu = max(recorder.outputs.values())
    wall = max(1e-9, last_mono - start_mono)
    cpu = last_cpu - start_cpu
    stats = snapshot.worker
    return ReplayResult(
        audio_seconds=audio_seconds,
        windows=len(keys),
        wall_seconds=wall,
        windows_per_second=len(keys) / wall,
        speed_vs_realtime=audio_seconds / wall,
        cpu_seconds=cpu,
        cpu_seconds_per_audio_hour=cpu * 3600.0 / audio_seconds,
        latency_ms=percentiles(latencies),
        processing_ms=percentiles(processing),
        windows_scored=stats.windows_scored,
        windows_gated=stats.windows_gated,
        windows_skipped_lagging=stats.windows_skipped_lagging,
        events=stats.events,
        lost_frames=snapshot.lost_frames,
    )


def write_replay_audio(
    args: argparse.Namespace, seconds: float, wav: Path
) -> tuple[Path, int, str, float]:
    """`seconds` of --audio (or generated audio) written to `wav`: (wav, its rate, what it
    is, its length in seconds)."""
    from monitor.audio.decode import write_pcm16

    samples, rate, what = replay_audio(
        args.audio, seconds, args.window_seconds, getattr(args, "soundscape", None)
    )
    write_pcm16(wav, samples, rate)
    return wav, rate, what, len(samples) / rate


def replay_settings(
    args: argparse.Namespace,
    audio: str,
    rate_hz: int,
    hop_seconds: float,
    labels: int,
    mqtt: tuple[str, int] | None,
) -> ReplaySettings:
    """What a replay (one fast source, or K real-time ones) fed the daemon."""
    return ReplaySettings(
        minutes=float(args.replay_minutes),
        audio=audio,
        source_rate_hz=rate_hz,
        window_seconds=float(args.window_seconds),
        hop_seconds=hop_seconds,
        labels=labels,
        max_batch=args.batch,
        mqtt=None if mqtt is None else f"{mqtt[0]}:{mqtt[1]}",
    )


def run_replay(
    args: argparse.Namespace, checkpoint: Checkpoint, labels: Sequence[str], work_dir: Path
) -> ReplayReport:
    """Replay --replay-minutes of audio through the daemon once per configuration."""
    load_before = load_average()
    mqtt = parse_mqtt(args.mqtt)
    seconds = float(args.replay_minutes) * 60.0
    hop = hop_or_default(getattr(args, "hop_seconds", None), args.window_seconds)
    wav, rate, what, audio_seconds = write_replay_audio(args, seconds, work_dir / "replay.wav")
    runs = []
    gates = list(dict.fromkeys(getattr(args, "change_gate", None) or ["off"]))
    for (backend, precision), gate in itertools.product(
        configurations(args.backend, args.precision), gates
    ):
        name = f"{backend}/{precision}" + ("+gate" if gate == "on" else "")
        try:
            source = {"type": "file", "id": "replay", "path": str(wav), "realtime": False}
            config = daemon_config(
                checkpoint,
                backend,
                precision,
                args,
                labels,
                {"source": source},
                hop,
                mqtt,
                work_dir / f"outbox-{backend}-{precision}-{gate}",
                change_gate=gate == "on",
            )
            logger.info("replaying %.1f min through the daemon with %s", seconds / 60, name)
            result = replay_once(config, audio_seconds)
            run = ReplayRun(name, backend, precision, ok=True, error=None, result=result)
        except Exception as err:
            run = ReplayRun(name, backend, precision, ok=False, error=first_line(err))
            logger.warning("replay with %s failed: %s", name, run.error)
        gc.collect()
        runs.append(run)
    return ReplayReport(
        note=checkpoint.note,
        checkpoint=checkpoint.report(),
        environment=environment(args.threads, load_before),
        replay=replay_settings(args, what, rate, hop, len(labels), mqtt),
        runs=tuple(runs),
    )
