"""model.device resolved once at load: CUDA where a driver and the backend can use it."""

from __future__ import annotations

import logging
from pathlib import Path

from monitor.config import ModelConfig
from monitor.errors import ModelError

logger = logging.getLogger(__name__)

# Present once the NVIDIA kernel driver is loaded: checked before importing torch, so that
# device auto costs a CPU-only box (and the onnx backend) no import.
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")


def cuda_problem(backend: str) -> str | None:
    """Why `backend` ("torch" or "onnx") cannot run on an NVIDIA GPU here; None if it can.
    Each backend's module answers for its library (imported only here, when asked)."""
    if backend == "onnx":
        from monitor.model.onnx_backend import onnx_cuda_problem

        return onnx_cuda_problem()
    from monitor.model.torch_backend import torch_cuda_problem

    return torch_cuda_problem()


def gpu_name() -> str:
    """The first CUDA device's name as torch reports it, "" when it cannot tell."""
    from monitor.model.torch_backend import torch_gpu_name

    return torch_gpu_name()


def resolve_device(cfg: ModelConfig, driver: Path = NVIDIA_DRIVER) -> ModelConfig:
    """cfg with device "cpu" or "cuda". auto: cuda when the NVIDIA driver is loaded and the
    backend (torch, for backend auto) can use it, and the precision is not int8; an explicit
    cuda that cannot be had is a ModelError naming why."""
    if cfg.device == "cpu" or cfg.backend == "openvino":  # OpenVINO's GPUs are Intel's
        return cfg.model_copy(update={"device": "cpu"})
    backend = "torch" if cfg.backend == "auto" else cfg.backend
    if cfg.device == "auto":
        if cfg.precision == "int8" or not driver.exists():
            return cfg.model_copy(update={"device": "cpu"})
        problem = cuda_problem(backend)
        if problem is not None:
            logger.info("model.device auto: the CPU (an NVIDIA driver is loaded, but %s)", problem)
            return cfg.model_copy(update={"device": "cpu"})
        return cfg.model_copy(update={"device": "cuda"})
    problem = cuda_problem(backend)
    if problem is not None:
        raise ModelError(f"model.device cuda: {backend} cannot use an NVIDIA GPU here: {problem}")
    return cfg


def device_label(cfg: ModelConfig) -> str:
    """A resolved cfg's device for logs and the auto choice's cache key: "cpu", or "cuda" with
    the GPU's name as torch reports it (another GPU may choose differently)."""
    if cfg.device != "cuda":
        return "cpu"
    name = gpu_name() if cfg.backend != "onnx" else ""
    return f"cuda ({name})" if name else "cuda"
