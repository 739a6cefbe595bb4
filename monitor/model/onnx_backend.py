"""The audio tower in ONNX Runtime, so that the daemon scores without ever importing torch.

Everything torch computes is computed once and cached (monitor.model.embedcache): the exported
audio tower (per checkpoint and precision) with its feature settings and logit scale, and
the label embeddings. On a cache miss a helper process (`python -m monitor.model`) does the
torch work and exits, so even a cold start leaves no torch in this process; a warm start
spawns nothing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from monitor.config import ModelConfig
from monitor.errors import ModelError
from monitor.model.exports import (
    ExportedTowerRunner,
    LoadedExport,
    check_export_config,
    load_export,
)
from monitor.model.runtime import prepare_for_inference

logger = logging.getLogger(__name__)

ONNX_CUDA_PROVIDER = "CUDAExecutionProvider"


class OnnxClapRunner(ExportedTowerRunner):
    """The exported audio tower in ONNX Runtime with numpy features; label embeddings come
    from the cache (or, once, from the torch helper process)."""

    def __init__(self, model_id: str, loaded: LoadedExport[Any], *, max_batch: int) -> None:
        session = loaded.opened
        name = session.get_inputs()[0].name
        # Where the tower runs: ONNX Runtime falls back to the CPU provider on its own.
        device = "cuda" if session.get_providers()[0] == ONNX_CUDA_PROVIDER else "cpu"
        super().__init__(
            model_id,
            "onnx",
            device,
            lambda features: session.run(None, {name: features})[0],
            loaded,
            max_batch=max_batch,
        )


def onnx_cuda_problem() -> str | None:
    """Why ONNX Runtime cannot run the tower on an NVIDIA GPU here; None if it can."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    if ONNX_CUDA_PROVIDER not in ort.get_available_providers():
        return (
            f"ONNX Runtime {ort.__version__} has no {ONNX_CUDA_PROVIDER} (install "
            "onnxruntime-gpu instead of onnxruntime)"
        )
    return None


def _session(path: Path, cfg: ModelConfig) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = cfg.torch_threads  # 0: one per physical core
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: warnings about folded initialisers are noise
    # Spinning workers wait out the idle time between windows on the CPU: not spinning saves
    # CPU per window for a little more latency - the better trade for an always-on service on
    # a small, shared CPU.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # One window shape, run forever: the arena and memory patterns only hold memory for
    # shapes that never come, for no speed.
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    # Shifted-window attention masks with -100: softmax leaves ~1e-44 (denormal floats) in the
    # probabilities, and every multiplication by one takes a slow microcode path. Flushing
    # them to zero (a change below 1e-37) avoids it.
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    providers = ["CPUExecutionProvider"]
    if cfg.device == "cuda":  # resolve_device has checked the provider is there
        providers.insert(0, ONNX_CUDA_PROVIDER)
    return ort.InferenceSession(str(path), options, providers=providers)


def load_onnx_runner(cfg: ModelConfig) -> OnnxClapRunner:
    """The onnx backend's runner: cached export (made on first use), cached label embeddings."""
    check_export_config(cfg)
    try:
        import onnxruntime
    except ImportError as err:
        raise ModelError(
            "model.backend onnx needs ONNX Runtime: pip install 'audio-monitor[onnx]'"
        ) from err
    started = time.monotonic()
    prepare_for_inference()
    loaded = load_export(cfg, "ONNX Runtime", lambda path: _session(path, cfg))
    session = loaded.opened
    runner = OnnxClapRunner(cfg.name, loaded, max_batch=cfg.max_batch)
    logger.info(
        "loaded CLAP audio tower %s in ONNX Runtime %s (%s) on %s: %d-d embeddings, %s threads, "
        "%.2f s",
        cfg.name,
        onnxruntime.__version__,
        runner.precision,
        session.get_providers()[0],
        runner.embedding_dim,
        cfg.torch_threads or "default",
        time.monotonic() - started,
    )
    return runner
