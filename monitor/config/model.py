"""`model:`: which CLAP checkpoint to load and how to run it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from monitor.config.base import StrictModel


class ModelConfig(StrictModel):
    """Which CLAP checkpoint to load and how to run it."""

    name: str = Field(
        default="laion/clap-htsat-unfused",
        min_length=1,
        description="Hugging Face hub id or a local directory holding the checkpoint.",
    )
    revision: str | None = Field(
        default=None, description="Hub revision (branch, tag or commit) to load; None = main."
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Intra-op threads for inference (torch or ONNX Runtime); 0 = the default.",
    )
    precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        default="auto",
        description=(
            "Audio tower weights: auto (at the first start on a machine, each precision (and "
            "backend, with backend auto) available is timed on a few generated windows and the "
            "fastest whose embeddings agree with fp32 is kept; the choice is cached per CPU, "
            "checkpoint and library versions), fp32 (reference scores), bf16 (fast only on a "
            "CPU with native bf16: avx512_bf16, amx_bf16 or Arm bf16) or int8 (dynamic "
            "quantisation of Linear layers); see `audio-monitor bench`."
        ),
    )
    backend: Literal["auto", "torch", "onnx", "openvino"] = Field(
        default="auto",
        description=(
            "torch; onnx: the audio tower exported once to ONNX Runtime (cached), so the "
            "daemon runs without importing torch; openvino: the same export on OpenVINO's "
            "CPU plugin, int8 statically quantised (calibrated on generated audio); auto: "
            "chosen with precision auto among those installed, torch when the precision is "
            "explicit."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description=(
            "Where the audio tower runs: cpu; cuda (an NVIDIA GPU through torch's CUDA build or "
            "onnxruntime-gpu's CUDAExecutionProvider; refused at start-up when neither can "
            "use one); auto: cuda when an NVIDIA driver is loaded and the backend can use it, "
            "else cpu. Never required: every path runs on the CPU."
        ),
    )
    cache_dir: Path | None = Field(
        default=None,
        description=(
            "Cache of label embeddings and exported models; None = $CACHE_DIRECTORY or "
            "$STATE_DIRECTORY/cache under systemd, else ~/.cache/audio-monitor."
        ),
    )
    max_batch: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Windows scored in one forward pass when several are waiting.",
    )
    trace: bool = Field(
        default=True,
        description=(
            "torch backend: run the audio tower as one TorchScript graph, traced once in a "
            "helper process, checked against the eager model and cached, so the daemon loads "
            "neither transformers nor a text tower (faster, and about 40 % less memory); "
            "false runs transformers' model in this process."
        ),
    )

    @model_validator(mode="after")
    def _backend_supports_precision(self) -> ModelConfig:
        if self.backend in ("onnx", "openvino") and self.precision == "bf16":
            raise ValueError(
                f"precision bf16 is for the torch backend; {self.backend} takes fp32 or int8"
            )
        if self.backend == "openvino" and self.device == "cuda":
            raise ValueError("backend openvino runs on the CPU; device cuda takes torch or onnx")
        if self.device == "cuda" and self.precision == "int8":
            raise ValueError(
                "precision int8 (dynamic quantisation) runs on the CPU only; with device cuda "
                "use auto, fp32 or bf16"
            )
        return self
