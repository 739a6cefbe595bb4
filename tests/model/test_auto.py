"""precision auto: candidates per CPU, the pure choice, its cache key, and the real loader."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.config import ModelConfig
from monitor.errors import ModelError
from monitor.model.auto import (
    Candidate,
    Choice,
    Excluded,
    Measurement,
    candidates,
    choice_key,
    choose,
    describe,
    load_configured,
    rejection,
)
from monitor.model.cpu import CpuInfo

NO_BF16 = CpuInfo("Intel(R) N100", ("avx2", "fma", "avx_vnni"))
BF16 = CpuInfo("AMD Ryzen 9 9950X", ("avx2", "avx512f", "avx512_bf16"))
TORCH_FP32, TORCH_INT8, TORCH_BF16 = (Candidate("torch", p) for p in ("fp32", "int8", "bf16"))
ONNX_FP32, ONNX_INT8 = Candidate("onnx", "fp32"), Candidate("onnx", "int8")


def test_bf16_is_a_candidate_only_with_native_bf16() -> None:
    tried, excluded = candidates("auto", NO_BF16, onnx_available=True)
    assert tried == (TORCH_FP32, ONNX_FP32, TORCH_INT8, ONNX_INT8)  # the references first
    assert excluded == (Excluded(TORCH_BF16, "no native bf16 on this CPU"),)
    tried, excluded = candidates("auto", BF16, onnx_available=True)
    assert TORCH_BF16 in tried and not excluded
    assert all(c.backend == "torch" for c in candidates("torch", BF16, True)[0])


def test_onnx_is_left_out_without_onnxruntime_and_an_explicit_backend_is_kept() -> None:
    tried, excluded = candidates("auto", BF16, onnx_available=False)
    assert tried == (TORCH_FP32, TORCH_INT8, TORCH_BF16)
    assert {e.candidate for e in excluded} == {ONNX_FP32, ONNX_INT8}
    assert all("onnxruntime" in e.reason for e in excluded)
    assert candidates("onnx", BF16, onnx_available=True) == ((ONNX_FP32, ONNX_INT8), ())


def test_on_a_gpu_int8_is_left_out_bf16_is_tried_and_onnx_needs_its_cuda_provider() -> None:
    no_provider = "ONNX Runtime 1.32.0 has no CUDAExecutionProvider (install onnxruntime-gpu)"
    tried, excluded = candidates("auto", NO_BF16, True, cuda=True, onnx_cuda_problem=no_provider)
    assert tried == (TORCH_FP32, TORCH_BF16)  # a GPU's bf16 is its own, whatever the CPU
    assert {e.candidate: e.reason for e in excluded} == {
        TORCH_INT8: "int8 (dynamic quantisation) is CPU-only",
        ONNX_FP32: no_provider,
        ONNX_INT8: "int8 (dynamic quantisation) is CPU-only",
    }
    tried, _ = candidates("auto", NO_BF16, True, cuda=True, onnx_cuda_problem=None)
    assert tried == (TORCH_FP32, ONNX_FP32, TORCH_BF16)


def test_the_fastest_agreeing_candidate_is_chosen_and_the_others_say_why_not() -> None:
    measured = (
        Measurement(TORCH_FP32, 63.0, 1.0),
        Measurement(TORCH_INT8, 30.0, 0.9931),  # fastest, but disagrees
        Measurement(ONNX_FP32, error="ONNX Runtime rejects its export"),
        Measurement(ONNX_INT8, 41.0, 0.9995),
    )
    excluded = (Excluded(TORCH_BF16, "no native bf16 on this CPU"),)
    choice = choose(measured, excluded)
    assert choice.chosen == ONNX_INT8
    assert rejection(measured[1]) == "cosine 0.9931: disagrees"
    assert rejection(measured[2]) == "failed: ONNX Runtime rejects its export"
    assert describe(choice) == (
        "onnx/int8 (41 ms/window, cosine 0.9995 vs fp32) over torch/fp32 (63 ms) "
        "torch/int8 (30 ms, cosine 0.9931: disagrees) "
        "onnx/fp32 (failed: ONNX Runtime rejects its export); "
        "not tried: torch/bf16 (no native bf16 on this CPU)"
    )
    assert Choice.from_json(choice.as_json()) == choice


def test_without_a_reference_or_an_agreeing_candidate_nothing_is_chosen() -> None:
    orphan = Measurement(TORCH_INT8, 10.0, None)
    assert rejection(orphan) == "no fp32 reference to check it against"
    with pytest.raises(ModelError, match="torch/fp32: failed: no weights"):
        choose([Measurement(TORCH_FP32, error="no weights"), orphan])
    # Equal speed: the earlier (the reference) wins, so a tie never trades accuracy.
    tie = [Measurement(TORCH_FP32, 20.0, 1.0), Measurement(TORCH_INT8, 20.0, 0.9999)]
    assert choose(tie).chosen == TORCH_FP32


def test_the_cache_key_changes_with_the_cpu_threads_versions_and_checkpoint() -> None:
    versions = {"torch": "2.9.0", "onnxruntime": "1.23.0", "transformers": "4.57.0"}
    base: dict[str, Any] = {
        "cpu": NO_BF16,
        "checkpoint_key": "abc",
        "versions": versions,
        "torch_threads": 0,
        "cpus": 4,
        "backend": "auto",
        "trace": True,
    }
    key = choice_key(**base)
    assert choice_key(**base) == key
    changed = [
        {"torch_threads": 2},
        {"cpus": 2},
        {"cpu": CpuInfo("Intel(R) N150", NO_BF16.isa)},
        {"cpu": CpuInfo(NO_BF16.model, ("avx2",))},
        {"checkpoint_key": "abd"},
        {"versions": {**versions, "torch": "2.10.0"}},
        {"versions": {**versions, "onnxruntime": "none"}},
        {"backend": "torch"},
        {"trace": False},
        {"device": "cuda (NVIDIA H200)"},
    ]
    keys = {choice_key(**{**base, **change}) for change in changed}
    assert key not in keys and len(keys) == len(changed)


class FakeRunner:
    """Embeds every window as a fixed direction: its candidate's agreement is constructed."""

    sample_rate_hz = 8000
    max_samples = 800

    def __init__(self, direction: np.ndarray) -> None:
        self.direction = direction

    def embed_audio(self, windows: Sequence[np.ndarray], positions: Any = None) -> np.ndarray:
        return np.tile(self.direction, (len(windows), 1)).astype(np.float32)


class FakeLoader:
    """Loads fake runners per (backend, precision); counts every load."""

    def __init__(self, directions: dict[Candidate, np.ndarray | None]) -> None:
        self.directions = directions
        self.loads: list[Candidate] = []

    def __call__(self, cfg: ModelConfig) -> FakeRunner:
        candidate = Candidate(cfg.backend, cfg.precision)
        self.loads.append(candidate)
        direction = self.directions[candidate]
        if direction is None:
            raise ModelError(f"cannot load {candidate.name}")
        return FakeRunner(direction)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    directory = tmp_path / "checkpoint"
    directory.mkdir()
    (directory / "config.json").write_text("{}", encoding="utf-8")
    return directory


def test_auto_skips_failing_and_disagreeing_candidates_and_caches_its_choice(
    checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reference = np.array([1.0, 0.0, 0.0])
    loader = FakeLoader(
        {
            TORCH_FP32: reference,
            TORCH_INT8: np.array([0.9, 0.4, 0.0]),  # cosine 0.91: disagrees
            TORCH_BF16: None,  # fails to load
        }
    )
    cfg = ModelConfig(name=str(checkpoint), backend="torch", cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.INFO, logger="monitor.model.auto"):
        runner = load_configured(cfg, loader, BF16)
    assert isinstance(runner, FakeRunner) and runner.direction is reference
    assert loader.loads == [TORCH_FP32, TORCH_INT8, TORCH_BF16]
    line = next(r.getMessage() for r in caplog.records if "over" in r.getMessage())
    assert line.startswith("precision auto: torch/fp32 (")
    assert "torch/int8 (" in line and "disagrees" in line
    assert "torch/bf16 (failed: cannot load torch/bf16)" in line
    (stored,) = (tmp_path / "cache" / "models").glob("*/auto-*.json")

    loader.loads.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monitor.model.auto"):
        again = load_configured(cfg, loader, BF16)
    assert isinstance(again, FakeRunner) and loader.loads == [TORCH_FP32]  # no measuring
    assert any("(cached on this machine)" in r.getMessage() for r in caplog.records)
    # Another CPU is another machine: measured afresh, cached beside the first.
    loader.loads.clear()
    load_configured(cfg, loader, CpuInfo("Other CPU", BF16.isa))
    assert loader.loads == [TORCH_FP32, TORCH_INT8, TORCH_BF16]
    assert len(list(stored.parent.glob("auto-*.json"))) == 2


def test_auto_reports_the_loaders_own_error_when_nothing_loads(
    checkpoint: Path, tmp_path: Path
) -> None:
    loader = FakeLoader({TORCH_FP32: None, TORCH_INT8: None})
    cfg = ModelConfig(name=str(checkpoint), backend="torch", cache_dir=tmp_path / "cache")
    with pytest.raises(ModelError, match=r"^cannot load torch/fp32$"):
        load_configured(cfg, loader, NO_BF16)


def test_explicit_bf16_without_native_bf16_warns_with_the_slowdown(
    checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bf16 = np.array([0.0, 1.0])
    loader = FakeLoader({TORCH_FP32: np.array([1.0, 0.0]), TORCH_BF16: bf16})
    cfg = ModelConfig(name=str(checkpoint), precision="bf16", cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="monitor.model.auto"):
        runner = load_configured(cfg, loader, NO_BF16)
    assert isinstance(runner, FakeRunner) and runner.direction is bf16
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "without native bf16 (Intel(R) N100" in warning
    assert "x the" in warning and "ms of fp32" in warning

    loader.loads.clear()
    caplog.clear()
    load_configured(cfg, loader, BF16)  # native bf16: loaded as asked, nothing measured
    assert loader.loads == [TORCH_BF16] and not caplog.records


def test_an_explicit_precision_with_backend_auto_runs_on_torch(checkpoint: Path) -> None:
    loader = FakeLoader({TORCH_INT8: np.array([1.0])})
    load_configured(ModelConfig(name=str(checkpoint), precision="int8"), loader, NO_BF16)
    assert loader.loads == [TORCH_INT8]


def test_auto_with_the_tiny_checkpoint_keeps_a_candidate_and_measures_once(
    tiny_clap_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from monitor.model.runner import load_clap

    cfg = ModelConfig(name=str(tiny_clap_dir), backend="torch", cache_dir=tmp_path, torch_threads=1)
    with caplog.at_level(logging.INFO, logger="monitor.model"):
        first = load_clap(cfg)
    chosen = (getattr(first, "backend", None), getattr(first, "precision", None))
    assert chosen in {("torch", "fp32"), ("torch", "int8"), ("torch", "bf16")}
    (line,) = [r.getMessage() for r in caplog.records if " over " in r.getMessage()]
    assert line.startswith(f"precision auto: torch/{chosen[1]} (")
    embedded = first.embed_audio([np.zeros(first.sample_rate_hz, dtype=np.float32)])
    assert embedded.shape == (1, first.embedding_dim)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monitor.model"):
        again = load_clap(cfg)
    assert (getattr(again, "backend", None), getattr(again, "precision", None)) == chosen
    loaded = [r for r in caplog.records if r.getMessage().startswith("loaded CLAP audio tower")]
    assert len(loaded) == 1  # the cached choice alone: nothing measured again
