"""The monitor's path as the daemon runs it: load_clap, build_scorers, per-window stages."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitor.audio.resample import MODEL_SAMPLE_RATE_HZ, StreamResampler, resample_to
from monitor.audio.windowing import to_mono
from monitor.bench.checkpoint import Checkpoint
from monitor.bench.workload import Workload, bench_label_set
from monitor.config import ModelConfig
from monitor.errors import ConfigError
from monitor.pipeline.scoring import LabelSetScorer, build_scorers

STAGES = ("resample", "features", "audio_tower", "scoring")


def configurations(
    backends: Sequence[str] | None, precisions: Sequence[str]
) -> list[tuple[str, str]]:
    """Every (backend, precision) asked for, each once, in the order given. No backends
    given: precision auto chooses among every backend (as the daemon's default does), an
    explicit precision runs on torch."""
    if backends is None:
        return [("auto" if p == "auto" else "torch", p) for p in dict.fromkeys(precisions)]
    return [(b, p) for b in dict.fromkeys(backends) for p in dict.fromkeys(precisions)]


def model_config(
    checkpoint: Checkpoint,
    backend: str,
    precision: str,
    threads: int,
    batch: int,
    device: str = "cpu",
) -> ModelConfig:
    """The daemon's model section for one configuration; an invalid one is a ConfigError."""
    from pydantic import ValidationError

    try:
        return ModelConfig.model_validate(
            {
                "name": str(checkpoint.path),
                "backend": backend,
                "precision": precision,
                "torch_threads": threads,
                "max_batch": max(1, min(batch, 64)),
                "device": device,
            }
        )
    except ValidationError as err:
        what = str(err.errors()[0]["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{backend}/{precision}: {what}") from err


@dataclass
class MonitorRun:
    """One precision/backend of the monitor's path in the main process, as its timings accrue."""

    backend: str
    precision: str
    ok: bool = False
    error: str | None = None
    load_seconds: float | None = None
    text_embedding_seconds: float | None = None
    ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    features_separate: bool = False
    scores: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    # (backend, precision) that auto resolved to, once loaded; None when neither was auto.
    resolved: tuple[str, str] | None = None
    device: str = "cpu"  # model.device resolved: "cuda" names the row

    @property
    def name(self) -> str:
        asked = "auto" if self.backend == self.precision == "auto" else self.configured
        name = asked if self.resolved is None else f"{asked}→{'/'.join(self.resolved)}"
        return name if self.device == "cpu" else f"{name}@{self.device}"

    @property
    def configured(self) -> str:
        return f"{self.backend}/{self.precision}"

    @property
    def runs_as(self) -> tuple[str, str]:
        """The (backend, precision) that ran: what auto resolved to, else as configured."""
        return self.resolved or (self.backend, self.precision)


AudioStage = Callable[[Sequence[np.ndarray], Sequence[int | None] | None], Any]


def stage_split(runner: Any) -> tuple[AudioStage, Callable[[Any], np.ndarray]] | None:
    """(front end, audio tower) when the runner exposes them apart, else None."""
    front = getattr(runner, "audio_features", None)
    tower = getattr(runner, "embed_audio_features", None)
    if callable(front) and callable(tower):
        return front, tower
    return None


def monitor_batch(
    runner: Any,
    scorers: Sequence[LabelSetScorer],
    batch: Sequence[np.ndarray],
    source_rate_hz: int,
    positions: Sequence[int | None] | None = None,
    stream: tuple[StreamResampler, Sequence[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """One batch as the worker runs it: resample each window (through the stream's
    resampler with each window's source start, if given, as the Windower does), embed
    together (with each window's stream position, if given), score each set.

    Returns (embeddings, scores of the first set, seconds per stage for the whole batch).
    """
    seconds: dict[str, float] = {}
    started = time.monotonic()
    if stream is None:
        resampled = [resample_to(to_mono(w), source_rate_hz) for w in batch]
    else:
        resampler, starts = stream
        resampled = [resampler(to_mono(w), start) for w, start in zip(batch, starts, strict=True)]
    seconds["resample"] = time.monotonic() - started
    split = stage_split(runner)
    if split is None:
        started = time.monotonic()
        embeddings = runner.embed_audio(resampled, positions)
        seconds["audio_tower"] = time.monotonic() - started
    else:
        front, tower = split
        started = time.monotonic()
        features = front(resampled, positions)
        seconds["features"] = time.monotonic() - started
        started = time.monotonic()
        embeddings = tower(features)
        seconds["audio_tower"] = time.monotonic() - started
    started = time.monotonic()
    scores = [scorer.score(embeddings) for scorer in scorers]
    seconds["scoring"] = time.monotonic() - started
    return np.asarray(embeddings), scores[0], seconds


class MonitorPath:
    """One precision/backend of the monitor's path, loaded as the daemon loads it."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        backend: str,
        precision: str,
        workload: Workload,
        labels: Sequence[str],
        device: str = "cpu",
    ) -> None:
        self.run = MonitorRun(backend, precision)
        self.checkpoint = checkpoint
        self.device = device
        self.workload = workload
        self.labels = list(labels)
        self.runner: Any = None
        self.scorers: list[LabelSetScorer] = []
        self.embeddings: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.resampler = StreamResampler(workload.source_rate_hz, MODEL_SAMPLE_RATE_HZ)

    @property
    def name(self) -> str:
        return self.run.name

    def load(self, threads: int, batch: int) -> None:
        from monitor.model.runner import load_clap

        run = self.run
        cfg = model_config(self.checkpoint, run.backend, run.precision, threads, batch, self.device)
        started = time.monotonic()
        self.runner = load_clap(cfg)
        run.load_seconds = time.monotonic() - started
        run.device = str(getattr(self.runner, "device", "cpu"))
        if "auto" in (run.backend, run.precision):
            run.resolved = (str(self.runner.backend), str(self.runner.precision))
        started = time.monotonic()
        self.scorers = build_scorers(
            [bench_label_set(self.labels)], self.runner.embed_text, self.runner.logit_scale
        )
        run.text_embedding_seconds = time.monotonic() - started
        run.features_separate = stage_split(self.runner) is not None
        # No positions, no stream resampler: nothing is cached, so the first timed window
        # starts cold, as a daemon's first window does.
        warm_up = self.workload.windows[:batch]
        monitor_batch(self.runner, self.scorers, warm_up, self.workload.source_rate_hz)

    def measure(self, indices: Sequence[int]) -> None:
        run = self.run
        windows = [self.workload.windows[i] for i in indices]
        every_position = self.workload.positions
        positions = [every_position[i] for i in indices]
        stream = (self.resampler, [self.workload.starts[i] for i in indices])
        started, cpu = time.monotonic(), time.process_time()
        emb, first_set, seconds = monitor_batch(
            self.runner, self.scorers, windows, self.workload.source_rate_hz, positions, stream
        )
        count = len(windows)
        run.ms += [(time.monotonic() - started) * 1000.0 / count] * count
        run.cpu_ms += [(time.process_time() - cpu) * 1000.0 / count] * count
        for stage, value in seconds.items():
            run.stages[stage] += [value * 1000.0 / count] * count
        self.embeddings.append(emb)
        self.scores.append(first_set)

    def finish(self) -> None:
        self.run.embeddings = np.concatenate(self.embeddings).astype(np.float64)
        self.run.scores = np.concatenate(self.scores).astype(np.float64)
        self.run.ok = True

    def release(self) -> None:
        self.runner = None
