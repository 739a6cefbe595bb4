"""model.device: resolved before any model loads, never requiring a GPU (this machine has none)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from monitor.config import ModelConfig
from monitor.errors import ModelError
from monitor.model.device import cuda_problem, device_label, resolve_device


def test_the_default_is_auto_and_int8_is_refused_on_cuda() -> None:
    assert ModelConfig().device == "auto"
    with pytest.raises(ValidationError, match=r"int8 .* runs on the CPU only"):
        ModelConfig(device="cuda", precision="int8")
    with pytest.raises(ValidationError, match="device"):
        ModelConfig(device="gpu")  # type: ignore[arg-type]


def test_auto_without_an_nvidia_driver_is_the_cpu_and_imports_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no-driver"
    for backend in ("auto", "torch", "onnx"):
        cfg = ModelConfig(backend=backend)  # type: ignore[arg-type]
        assert resolve_device(cfg, driver=missing).device == "cpu"
    assert resolve_device(ModelConfig(device="cpu")).device == "cpu"
    assert device_label(ModelConfig(device="cpu")) == "cpu"


def test_auto_with_a_driver_but_a_cpu_only_torch_falls_back_to_the_cpu_saying_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    driver = tmp_path / "version"
    driver.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.00\n")
    with caplog.at_level(logging.INFO, logger="monitor.model.device"):
        resolved = resolve_device(ModelConfig(backend="torch"), driver=driver)
    assert resolved.device == "cpu"
    assert "CPU-only build" in caplog.text or "sees no CUDA device" in caplog.text
    # int8 runs on the CPU: auto does not even look for a GPU.
    assert resolve_device(ModelConfig(precision="int8"), driver=driver).device == "cpu"


def test_an_explicit_cuda_that_cannot_be_had_is_one_line_naming_why() -> None:
    if cuda_problem("torch") is None:
        pytest.skip("this machine's torch can use a GPU")
    with pytest.raises(ModelError) as raised:
        resolve_device(ModelConfig(device="cuda", backend="torch"))
    message = str(raised.value)
    assert message.startswith("model.device cuda: torch cannot use an NVIDIA GPU here: torch ")
    assert "\n" not in message
    onnx = cuda_problem("onnx")
    if onnx is None:
        return  # onnxruntime-gpu with a device: nothing to refuse
    assert "CUDAExecutionProvider" in onnx or "not installed" in onnx
    with pytest.raises(ModelError, match=r"model\.device cuda: onnx cannot use"):
        resolve_device(ModelConfig(device="cuda", backend="onnx"))
