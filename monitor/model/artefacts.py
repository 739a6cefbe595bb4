"""Files derived from a checkpoint (ONNX exports, traced graphs): formats, names, metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from monitor.model.embedcache import CheckpointIdentity, EmbeddingCache

ONNX_FORMAT = 3  # bump when the exported graph changes (inputs, outputs, meaning or speed)
ONNX_PRECISIONS = ("fp32", "int8")
ONNX_KEYS = ("format", "precision", "features", "logit_scale", "embedding_dim")
GRAPH_FORMAT = 1  # bump when the traced graph changes (inputs, outputs, kernels)
GRAPH_KEYS = ("format", "precision", "features", "logit_scale", "embedding_dim", "torch")


def onnx_variant(backend: str, precision: str) -> str:
    """Which ONNX export a backend runs at a precision: fp32 is shared; int8 is quantised
    dynamically for ONNX Runtime and statically (QDQ, calibrated) for OpenVINO, whose int8
    kernels only take the static form."""
    return "int8-qdq" if backend == "openvino" and precision == "int8" else precision


def onnx_file_names(variant: str) -> tuple[str, str]:
    """(model file, metadata file) of an export (an onnx_variant), inside the checkpoint's
    artefact directory."""
    stem = f"audio-v{ONNX_FORMAT}-{variant}"
    return f"{stem}.onnx", f"{stem}.json"


def graph_file_names(precision: str) -> tuple[str, str]:
    """(graph file, metadata file) of a traced tower, inside the checkpoint's artefact dir."""
    stem = f"audio-ts-v{GRAPH_FORMAT}-{precision}"
    return f"{stem}.pt", f"{stem}.json"


def read_metadata(path: Path, fmt: int, *required: str) -> dict[str, Any] | None:
    """An artefact's metadata JSON if it is readable, of format `fmt` and has `required`."""
    try:
        metadata: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(metadata, dict) or metadata.get("format") != fmt:
        return None
    if not all(key in metadata for key in required):
        return None
    return metadata


def cached_artefact(
    identity: CheckpointIdentity | None,
    cache: EmbeddingCache,
    names: tuple[str, str],
    fmt: int,
    *required: str,
) -> tuple[Path, dict[str, Any]] | None:
    """(model file, metadata) of a finished artefact of the checkpoint `identity` (None: not
    on this machine yet), if any."""
    directory = None if identity is None else cache.artefact_dir(identity)
    if directory is None:
        return None
    model_name, meta_name = names
    metadata = read_metadata(directory / meta_name, fmt, *required)
    if metadata is None or not (directory / model_name).is_file():
        return None
    return directory / model_name, metadata
