"""The reference path: transformers' zero-shot-audio-classification pipeline, timed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monitor.bench.checkpoint import Checkpoint
from monitor.bench.roofline import tower_gflop
from monitor.bench.workload import Workload
from monitor.config import DEFAULT_PROMPT_TEMPLATE


def load_pipeline(path: Path, threads: int) -> Any:
    """The reference pipeline on CPU, fp32, with `threads` intra-op threads (0 = default)."""
    import torch
    from transformers import pipeline

    if threads > 0:
        torch.set_num_threads(threads)
    return pipeline("zero-shot-audio-classification", model=str(path), device="cpu")


def pipeline_scores(pipe: Any, window_48k: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """The pipeline's softmax scores for one window, in the order of `labels`."""
    out = pipe(
        window_48k, candidate_labels=list(labels), hypothesis_template=DEFAULT_PROMPT_TEMPLATE
    )
    by_label = {row["label"]: float(row["score"]) for row in out}
    return np.array([by_label[label] for label in labels], dtype=np.float64)


def pipeline_audio_embeddings(pipe: Any, windows_48k: Sequence[np.ndarray]) -> np.ndarray:
    """Normalised audio embeddings of the pipeline's own model and extractor (fp32 reference)."""
    import torch
    import torch.nn.functional as F

    rows = []
    with torch.inference_mode():
        for window in windows_48k:
            inputs = pipe.feature_extractor(
                [window], sampling_rate=pipe.feature_extractor.sampling_rate, return_tensors="pt"
            )
            output = pipe.model.get_audio_features(**inputs)
            features = output if isinstance(output, torch.Tensor) else output.pooler_output
            rows.append(F.normalize(features.float(), dim=-1).numpy()[0])
    return np.stack(rows).astype(np.float64)


@dataclass
class ReferenceRun:
    """The pipeline's timings, scores and embeddings in the main process, as they accrue."""

    ok: bool = False
    error: str | None = None
    load_seconds: float | None = None
    ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    scores: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    torch_threads: int | None = None
    tower_gflop: float | None = None  # per window, counted once on the reference model
    name: str = "pipeline"


class ReferencePath:
    """The pipeline, loaded and warmed up, timed one window at a time."""

    def __init__(self, checkpoint: Checkpoint, workload: Workload, labels: Sequence[str]) -> None:
        self.run = ReferenceRun()
        self.checkpoint = checkpoint
        self.windows = workload.model_windows()  # resampled outside the timing
        self.labels = list(labels)
        self.rows: list[np.ndarray] = []
        self.pipe: Any = None

    def load(self, threads: int) -> None:
        started = time.monotonic()
        self.pipe = load_pipeline(self.checkpoint.path, threads)
        self.run.load_seconds = time.monotonic() - started
        pipeline_scores(self.pipe, self.windows[0], self.labels)  # warm-up
        import torch

        self.run.torch_threads = int(torch.get_num_threads())

    def measure(self, indices: Sequence[int]) -> None:
        for index in indices:
            started, cpu = time.monotonic(), time.process_time()
            self.rows.append(pipeline_scores(self.pipe, self.windows[index], self.labels))
            self.run.ms.append((time.monotonic() - started) * 1000.0)
            self.run.cpu_ms.append((time.process_time() - cpu) * 1000.0)

    def finish(self) -> None:
        self.run.scores = np.stack(self.rows)
        self.run.embeddings = pipeline_audio_embeddings(self.pipe, self.windows)
        self.run.tower_gflop = tower_gflop(self.pipe, self.windows[0])
        self.run.ok = True

    def release(self) -> None:
        self.pipe = None
