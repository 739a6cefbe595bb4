"""Each path's memory, measured alone in a child process (`python -m monitor.bench --child`)."""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monitor.audio.resample import MODEL_SAMPLE_RATE_HZ, StreamResampler, resample_to
from monitor.bench.reference import load_pipeline, pipeline_scores
from monitor.bench.stats import SteadySampler, memory_mib
from monitor.bench.workload import bench_label_set
from monitor.config import ModelConfig
from monitor.errors import EXIT_FAILURE, EXIT_OK, first_line
from monitor.model.runtime import prepare_for_inference
from monitor.pipeline.scoring import build_scorers

logger = logging.getLogger(__name__)

CHILD_TIMEOUT_SECONDS = 3600.0


@dataclass(frozen=True)
class ChildSpec:
    """What a child process runs: one path over the windows saved in `windows` (.npy)."""

    kind: str  # "reference" or "monitor"
    windows: str
    source_rate_hz: int
    positions: list[int | None]
    starts: list[int]
    labels: list[str]
    threads: int
    batch: int
    model: str
    model_config: dict[str, Any] | None = None  # the monitor's ModelConfig, as JSON


@dataclass(frozen=True)
class ChildMemory:
    """What a child process reports: its load time and memory in MiB, or why it failed."""

    ok: bool
    error: str | None = None
    load_seconds: float | None = None
    after_load: float | None = None
    steady: float | None = None
    peak: float | None = None
    anon: float | None = None
    file: float | None = None
    torch_imported: bool | None = None  # known for the monitor's path only
    transformers_imported: bool | None = None


def _run_child_reference(spec: ChildSpec, windows: np.ndarray) -> ChildMemory:
    rate = spec.source_rate_hz
    started = time.monotonic()
    pipe = load_pipeline(Path(spec.model), spec.threads)
    load_seconds = time.monotonic() - started
    after_load = memory_mib().rss
    sampler = SteadySampler()
    for window in windows:
        pipeline_scores(pipe, resample_to(window, rate, MODEL_SAMPLE_RATE_HZ), spec.labels)
        sampler.after_window()
    return ChildMemory(
        ok=True, load_seconds=load_seconds, after_load=after_load, **asdict(sampler.result())
    )


def _run_child_monitor(spec: ChildSpec, windows: np.ndarray) -> ChildMemory:
    from monitor.model.runner import load_clap

    cfg = ModelConfig.model_validate(spec.model_config)
    started = time.monotonic()
    runner = load_clap(cfg)
    scorers = build_scorers([bench_label_set(spec.labels)], runner.embed_text, runner.logit_scale)
    load_seconds = time.monotonic() - started
    gc.collect()
    after_load = memory_mib().rss
    size = spec.batch
    positions, starts = spec.positions, spec.starts
    resampler = StreamResampler(spec.source_rate_hz, MODEL_SAMPLE_RATE_HZ)
    sampler = SteadySampler()
    for start in range(0, len(windows), size):
        resampled = [
            resampler(w, first)
            for w, first in zip(
                windows[start : start + size], starts[start : start + size], strict=True
            )
        ]
        embeddings = runner.embed_audio(resampled, positions[start : start + size])
        for scorer in scorers:
            scorer.score(embeddings)
        sampler.after_window()
    return ChildMemory(
        ok=True,
        load_seconds=load_seconds,
        after_load=after_load,
        torch_imported="torch" in sys.modules,
        transformers_imported="transformers" in sys.modules,
        **asdict(sampler.result()),
    )


def child_main(argv: Sequence[str]) -> int:
    """`python -m monitor.bench --child SPEC.json`: run one path, print its memory as JSON."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    prepare_for_inference()
    spec = ChildSpec(**json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    windows = np.load(spec.windows)
    try:
        if spec.kind == "reference":
            out = _run_child_reference(spec, windows)
        else:
            out = _run_child_monitor(spec, windows)
    except Exception as err:
        out = ChildMemory(ok=False, error=first_line(err))
    sys.stdout.write(json.dumps(asdict(out)) + "\n")
    sys.stdout.flush()
    return EXIT_OK if out.ok else EXIT_FAILURE


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    return env


def measure_memory(spec: ChildSpec, work_dir: Path, name: str) -> ChildMemory:
    """Run one path in a fresh interpreter; its steady (after the work) and peak RSS in MiB."""
    spec_path = work_dir / f"child-{name.replace('/', '-')}.json"
    spec_path.write_text(json.dumps(asdict(spec)), encoding="utf-8")
    command = [sys.executable, "-m", "monitor.bench", "--child", str(spec_path)]
    logger.info("memory of %s in a child process", name)
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_SECONDS,
            env=_child_env(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        reason = f"child process timed out after {CHILD_TIMEOUT_SECONDS:g} s"
        return ChildMemory(ok=False, error=reason)
    lines = done.stdout.strip().splitlines()
    try:
        return ChildMemory(**json.loads(lines[-1]))
    except (IndexError, json.JSONDecodeError, TypeError):
        tail = done.stderr.strip().splitlines()
        reason = tail[-1] if tail else f"exit code {done.returncode}"
        return ChildMemory(ok=False, error=f"child process failed: {reason}")
