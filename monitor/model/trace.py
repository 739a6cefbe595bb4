"""The audio tower made into files once: a TorchScript graph (torch backend) or ONNX (onnx backend).

Both import transformers, so they run in the helper process (`python -m monitor.model`).
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from monitor.atomic import write_json_atomic
from monitor.config import ModelConfig
from monitor.errors import ModelError, first_line
from monitor.model.artefacts import (
    GRAPH_FORMAT,
    ONNX_FORMAT,
    ONNX_PRECISIONS,
    graph_file_names,
    onnx_file_names,
    onnx_variant,
)
from monitor.model.calibration import calibration_windows
from monitor.model.checkpoint import checkpoint_dir, resolve_source
from monitor.model.embedcache import (
    EmbeddingCache,
    checkpoint_identity,
    producer_version,
)
from monitor.model.features import MelSettings, NumpyMelFeatures
from monitor.model.tower import (
    load_audio_tower,
    logit_scale,
    mel_settings,
    normalised_tower,
    prepared_tower,
)

logger = logging.getLogger(__name__)

# Opset 20 has Gelu as one op, where earlier opsets decompose it into several slower ones.
ONNX_OPSET = 20
# Largest difference allowed between the traced and the eager tower's normalised embeddings.
TRACE_TOLERANCE = 1e-5


class Untraceable(Exception):
    """The tower cannot run as a faithful graph; the message says why."""


def build_graph(cfg: ModelConfig, out_dir: Path | None = None) -> Path:
    """Trace the audio tower in cfg.precision into out_dir or the cache; returns the graph's
    path (metadata beside it). Untraceable if it cannot be traced faithfully.

    Imports transformers: the torch backend runs it in a helper process.
    """
    source = resolve_source(cfg)
    import torch

    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    model, extractor, directory = prepared_tower(cfg, source)
    settings = mel_settings(extractor)
    if settings is None:
        raise Untraceable("the fusion feature extractor (4 stacked crops) needs the eager model")
    started = time.monotonic()
    graph = _trace_tower(model, settings, cfg.precision)
    out_dir = _artefact_dir(cfg, directory, out_dir, "trace")
    name, meta = graph_file_names(cfg.precision)
    with tempfile.TemporaryDirectory(dir=out_dir) as work:
        staged = Path(work) / name
        torch.jit.save(graph, str(staged))
        staged.replace(out_dir / name)
    metadata = _artefact_metadata(cfg, directory, model, settings, GRAPH_FORMAT)
    write_json_atomic(out_dir / meta, {**metadata, "precision": cfg.precision})
    logger.info("traced the audio tower to %s (%.1f s)", out_dir / name, time.monotonic() - started)
    return out_dir / name


def _artefact_dir(cfg: ModelConfig, directory: Path, out_dir: Path | None, verb: str) -> Path:
    """out_dir, or the cache's directory for this checkpoint's derived files, created."""
    if out_dir is None:
        identity = checkpoint_identity(cfg.name, cfg.revision, directory)
        out_dir = EmbeddingCache.open(cfg.cache_dir).artefact_dir(identity)
        if out_dir is None:
            raise ModelError(f"cannot {verb} CLAP model {cfg.name!r}: the cache is not writable")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _artefact_metadata(
    cfg: ModelConfig, directory: Path, model: Any, settings: MelSettings, fmt: int
) -> dict[str, Any]:
    """What a runner needs beside an exported or traced tower, and what it was made from."""
    import torch

    return {
        "format": fmt,
        "model_id": cfg.name,
        "revision": cfg.revision,
        "checkpoint": str(directory),
        "embedding_dim": int(model.config.projection_dim),
        "logit_scale": logit_scale(cfg, directory),
        "features": settings.to_dict(),
        "torch": torch.__version__,
        "producer": producer_version(),
    }


def _trace_tower(model: Any, settings: MelSettings, precision: str) -> Any:
    """The audio tower (features -> normalised embeddings) as a frozen TorchScript graph;
    Untraceable when it cannot be traced faithfully (then the eager model runs).

    The HTSAT forward is about 1,500 small operations, each dispatched from Python; one graph
    saves that overhead and, saved to disk, lets the daemon run the tower without importing
    transformers. torch.jit is deprecated in torch 2.13 but works; torch.compile would need a
    C++ compiler on the device. The graph is checked against the eager model on two probe
    windows (also a batch, as tracing fixes shapes) before it is used.
    """
    import torch

    tower = normalised_tower(model)
    frames, bins = settings.frames, settings.mel_bins
    probe = torch.linspace(-90.0, 10.0, 2 * frames * bins).reshape(2, 1, frames, bins)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # Deprecation and "trace might not generalise" warnings: the check below decides.
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(  # type: ignore[no-untyped-call]
                tower, probe[:1], check_trace=False, strict=False
            )
            graph = torch.jit.freeze(traced)
            # Like with like: int8's dynamic quantisation ranges span the whole batch, so even
            # the eager tower gives a window other embeddings alone than within a batch.
            expected, expected_single = tower(probe), tower(probe[1:])
            got, single = graph(probe), graph(probe[1:])
    except Exception as err:
        raise Untraceable(f"tracing it failed: {first_line(err)}") from err
    difference = max(
        float((got - expected).abs().max()), float((single - expected_single).abs().max())
    )
    if not difference <= TRACE_TOLERANCE:
        raise Untraceable(f"its traced graph differs by {difference:.2g}")
    return graph


def export_onnx(cfg: ModelConfig, out_dir: Path | None = None) -> Path:
    """Export the audio tower (features -> normalised embedding) to ONNX once, quantised for
    precision int8, into out_dir or the cache; returns the .onnx path (metadata beside it).

    Imports torch: the onnx backend runs it in a helper process (python -m monitor.model).
    """
    if cfg.precision not in ONNX_PRECISIONS:
        raise ModelError(f"model.precision {cfg.precision} is not available with backend onnx")
    source = resolve_source(cfg)
    import torch

    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    model, extractor = load_audio_tower(cfg, source)
    directory = checkpoint_dir(cfg, source)
    try:
        settings = MelSettings.from_extractor(extractor.to_dict())
    except ValueError as err:
        raise ModelError(f"cannot export CLAP model {cfg.name!r} to ONNX: {err}") from err
    out_dir = _artefact_dir(cfg, directory, out_dir, "export")
    metadata = _artefact_metadata(cfg, directory, model, settings, ONNX_FORMAT)
    fp32_name, fp32_meta = onnx_file_names("fp32")
    fp32_path = out_dir / fp32_name
    if not (fp32_path.is_file() and (out_dir / fp32_meta).is_file()):
        started = time.monotonic()
        try:
            _export_graph(model, settings, fp32_path)
        except ImportError as err:  # the exporter needs onnx and onnxscript
            raise ModelError(
                f"cannot export CLAP model {cfg.name!r} to ONNX: {err}; "
                "pip install 'audio-monitor[onnx]'"
            ) from err
        write_json_atomic(out_dir / fp32_meta, {**metadata, "precision": "fp32"})
        logger.info(
            "exported the audio tower to %s (%.1f s)", fp32_path, time.monotonic() - started
        )
    variant = onnx_variant(cfg.backend, cfg.precision)
    if variant == "fp32":
        return fp32_path
    name, meta = onnx_file_names(variant)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=out_dir) as work:
        staged = Path(work) / name
        if variant == "int8-qdq":
            _quantize_static(fp32_path, staged, settings)
        else:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(fp32_path, staged, weight_type=QuantType.QInt8)
        staged.replace(out_dir / name)
    write_json_atomic(out_dir / meta, {**metadata, "precision": cfg.precision})
    logger.info(
        "quantised the audio tower to %s: %s (%.1f s)",
        variant,
        out_dir / name,
        time.monotonic() - started,
    )
    return out_dir / name


def _quantize_static(fp32_path: Path, out_path: Path, settings: MelSettings) -> None:
    """int8 in QDQ form for OpenVINO: u8 activations with ranges calibrated on generated
    windows, s8 weights per output channel, 7-bit (reduce_range: no saturation in AVX2's
    u8 x s8 products); the matrix products only, not the patch embedding's convolution,
    whose input is the raw decibels (quantised, it cost the most agreement with fp32:
    docs/PERFORMANCE.md, OpenVINO)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    features = NumpyMelFeatures(settings)(
        calibration_windows(settings.sample_rate_hz, settings.max_samples)
    ).astype(np.float32)

    class Windows(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._rows = iter(range(features.shape[0]))

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self._rows, None)
            return None if row is None else {"input_features": features[row : row + 1]}

    quantize_static(
        str(fp32_path),
        str(out_path),
        Windows(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        op_types_to_quantize=["MatMul", "Gemm"],
    )


def _interpolation_as_matmul(model: Any, frames: int) -> None:
    """Stretch `frames` to the tower's input length with a constant matrix, for export.

    HTSAT stretches the 1001 frames to 1024 with a bicubic resize (align_corners, so the mel
    axis is left exactly as it is). ONNX Runtime's Resize is slow at it; the same coefficients
    as one MatMul are cheap (torch's own resize is fast, so only the exported graph gets this).
    """
    import types

    import torch
    import torch.nn.functional as F

    encoder = model.audio_model.audio_encoder
    width = int(encoder.spec_size * encoder.freq_ratio)
    if frames >= width:
        return
    with torch.no_grad():
        # Column j is what the resize makes of a unit impulse at frame j.
        basis = torch.eye(frames, dtype=torch.float32).view(1, 1, frames, frames)
        stretch = F.interpolate(basis, (width, frames), mode="bicubic", align_corners=True)[0, 0]
    original = encoder.reshape_mel2img

    def reshape_mel2img(self: Any, features: torch.Tensor) -> Any:
        if features.shape[2] == frames:
            features = torch.matmul(stretch, features)
        return original(features)

    encoder.reshape_mel2img = types.MethodType(reshape_mel2img, encoder)


def _export_graph(model: Any, settings: MelSettings, path: Path) -> None:
    import torch

    _interpolation_as_matmul(model, settings.frames)
    tower = normalised_tower(model)
    # Two windows of plausible decibels: batch 1 would let the exporter fix the batch size.
    example = torch.linspace(-90.0, 10.0, 2 * settings.frames * settings.mel_bins)
    example = example.reshape(2, 1, settings.frames, settings.mel_bins)
    batch = torch.export.Dim("batch", min=1, max=256)
    with tempfile.TemporaryDirectory(dir=path.parent) as work:
        staged = Path(work) / path.name
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                tower,
                (example,),
                str(staged),
                input_names=["input_features"],
                output_names=["embeddings"],
                dynamic_shapes={"input_features": {0: batch}},
                opset_version=ONNX_OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        staged.replace(path)
