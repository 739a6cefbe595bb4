"""What callers use of a loaded CLAP checkpoint, and load_clap choosing the backend lazily."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from monitor.config import ModelConfig
from monitor.model.batching import Positions


class ClapRunner(Protocol):
    """What callers use of a loaded checkpoint, whichever backend runs it.

    embed_text: (len(prompts), dim) float32 rows, L2-normalised; embed_audio: the same for
    mono float32 windows of 1..max_samples samples at sample_rate_hz, with optionally each
    window's place in its stream at that rate (monitor.frames.Window.position, keyed by the
    source): windows of one stream then share the feature frames they overlap.
    """

    model_id: str
    sample_rate_hz: int
    max_samples: int
    logit_scale: float
    embedding_dim: int

    def embed_text(self, prompts: Sequence[str]) -> np.ndarray: ...

    def embed_audio(
        self, windows: Sequence[np.ndarray], positions: Positions | None = None
    ) -> np.ndarray: ...


def load_clap(cfg: ModelConfig) -> ClapRunner:
    """Load the configured CLAP checkpoint; ModelError says how to provide missing weights.

    precision auto (and backend auto) are resolved by monitor.model.auto, which measures the
    candidates once per machine through _load_backend. backend "torch": the audio tower in
    this process (monitor.model.torch_backend); backend "onnx": monitor.model.onnx_backend,
    which never imports torch. Each backend is imported only when chosen, so importing this
    module costs neither.
    """
    from monitor.model.auto import load_configured

    runner: ClapRunner = load_configured(cfg, _load_backend)
    return runner


def _load_backend(cfg: ModelConfig) -> ClapRunner:
    """The runner of a concrete backend and precision (neither is auto here)."""
    if cfg.backend == "onnx":
        from monitor.model.onnx_backend import load_onnx_runner

        return load_onnx_runner(cfg)
    if cfg.backend == "openvino":
        from monitor.model.openvino_backend import load_openvino_runner

        return load_openvino_runner(cfg)
    from monitor.model.torch_backend import load_torch_runner

    return load_torch_runner(cfg)
