"""The audio tower on OpenVINO's CPU plugin: the onnx backend's export, int8 in static QDQ form.

The only module that imports openvino. Like the onnx backend it never imports torch: the
export (and the calibrated int8 quantisation) is made once by the torch helper process.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

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


class OpenVinoClapRunner(ExportedTowerRunner):
    """The exported audio tower compiled by OpenVINO for the CPU, with numpy features."""

    def __init__(self, model_id: str, loaded: LoadedExport[Any], *, max_batch: int) -> None:
        compiled = loaded.opened
        output = compiled.output(0)
        # An infer request is not to be shared between threads; the worker and an eval pool
        # may both call: one request, one call at a time.
        request = compiled.create_infer_request()
        lock = threading.Lock()

        def infer(features: np.ndarray) -> np.ndarray:
            with lock:
                result: np.ndarray = np.array(request.infer({0: features})[output], copy=True)
            return result

        super().__init__(model_id, "openvino", "cpu", infer, loaded, max_batch=max_batch)


def _compiled(path: Path, cfg: ModelConfig) -> Any:
    import openvino as ov

    properties: dict[str, Any] = {
        # One window at a time, as soon as it is ready: the daemon's live case.
        "PERFORMANCE_HINT": "LATENCY",
        # bf16 where the CPU has it would change the scores; precision auto decides speed.
        "INFERENCE_PRECISION_HINT": "f32",
    }
    if cfg.torch_threads > 0:
        properties["INFERENCE_NUM_THREADS"] = cfg.torch_threads
    return ov.Core().compile_model(str(path), "CPU", properties)


def load_openvino_runner(cfg: ModelConfig) -> OpenVinoClapRunner:
    """The openvino backend's runner: the cached export (made on first use), compiled."""
    check_export_config(cfg)
    try:
        import openvino
    except ImportError as err:
        raise ModelError(
            "model.backend openvino needs OpenVINO: pip install 'audio-monitor[openvino]'"
        ) from err
    started = time.monotonic()
    prepare_for_inference()
    loaded = load_export(cfg, "OpenVINO", lambda path: _compiled(path, cfg))
    runner = OpenVinoClapRunner(cfg.name, loaded, max_batch=cfg.max_batch)
    logger.info(
        "loaded CLAP audio tower %s in OpenVINO %s (%s): %d-d embeddings, %s threads, %.2f s",
        cfg.name,
        openvino.__version__.split("-")[0],
        runner.precision,
        runner.embedding_dim,
        cfg.torch_threads or "default",
        time.monotonic() - started,
    )
    return runner
