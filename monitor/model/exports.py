"""ONNX exports of the audio tower for the onnx and openvino backends: found in the cache, or
made once by the torch helper process, then opened by the backend (no torch here)."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from monitor.config import ModelConfig
from monitor.errors import ConfigError, ModelError, first_line
from monitor.model.artefacts import (
    ONNX_FORMAT,
    ONNX_KEYS,
    ONNX_PRECISIONS,
    cached_artefact,
    onnx_file_names,
    onnx_variant,
    read_metadata,
)
from monitor.model.batching import Positions, embed_through_stages
from monitor.model.checkpoint import identity_of, resolve_source
from monitor.model.embedcache import CachedTextEmbedder, CheckpointIdentity, EmbeddingCache
from monitor.model.features import MelSettings, NumpyMelFeatures, StreamingMel, check_window
from monitor.model.helper import HelperTextEncoder, run_torch_helper

logger = logging.getLogger(__name__)

Opened = TypeVar("Opened")


@dataclass(frozen=True)
class LoadedExport(Generic[Opened]):
    """An export opened by a backend, with what the runner needs beside it."""

    opened: Opened  # the backend's session or compiled model
    metadata: dict[str, Any]  # features, logit scale, embedding size, precision
    model_path: Path | None  # None when there is no cache (a temporary export, gone)
    text: CachedTextEmbedder  # label embeddings: the cache, else the torch helper


class ExportedTowerRunner:
    """An exported audio tower with numpy features (no torch); label embeddings from the
    cache, or once from the torch helper. The backend gives `infer`: features (n, 1, frames,
    mel bins) float32 -> embeddings (n, dim)."""

    def __init__(
        self,
        model_id: str,
        backend: str,
        device: str,
        infer: Callable[[np.ndarray], Any],
        loaded: LoadedExport[Any],
        *,
        max_batch: int,
    ) -> None:
        self.model_id = model_id
        self.backend = backend
        self.device = device
        self.precision = str(loaded.metadata["precision"])
        self.model_path = loaded.model_path
        self._infer = infer
        self._text = loaded.text
        settings = MelSettings.from_dict(loaded.metadata["features"])
        # One stream's windows at a time (the daemon's): positioned windows share frames.
        self._features = StreamingMel(NumpyMelFeatures(settings))
        self.sample_rate_hz: int = settings.sample_rate_hz
        self.max_samples: int = settings.max_samples
        self.logit_scale: float = float(loaded.metadata["logit_scale"])
        self.embedding_dim: int = int(loaded.metadata["embedding_dim"])
        self.max_batch = max_batch

    def embed_text(self, prompts: Sequence[str]) -> np.ndarray:
        """Embed text prompts: (len(prompts), dim) float32, each row L2-normalised."""
        return self._text(prompts)

    def audio_features(
        self, windows: Sequence[np.ndarray], positions: Positions | None = None
    ) -> np.ndarray:
        """The model's input features of checked windows: (n, 1, frames, mel bins) float32;
        positions: each window's start in its stream (see ClapRunner), or None."""
        batch = [
            check_window(i, w, self.max_samples, self.sample_rate_hz) for i, w in enumerate(windows)
        ]
        features: np.ndarray = self._features(batch, positions)
        return features

    def embed_audio_features(self, features: np.ndarray) -> np.ndarray:
        """Embeddings of audio_features() output: (n, dim) float32, L2-normalised."""
        embeddings = np.asarray(self._infer(features), dtype=np.float32)
        # The graph normalises already; again here so int8 rounding cannot leave |e| != 1.
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        out: np.ndarray = embeddings / np.maximum(norms, 1e-12)
        return out

    def embed_audio(
        self, windows: Sequence[np.ndarray], positions: Positions | None = None
    ) -> np.ndarray:
        """Embed mono float32 windows at sample_rate_hz: (len(windows), dim) float32.

        Each window must hold 1..max_samples samples; positions as in ClapRunner.
        """
        return embed_through_stages(self, windows, positions)


def check_export_config(cfg: ModelConfig) -> None:
    """Before any import: ConfigError for a precision the export backends lack (a config
    built in code skips the validator), ModelError for a checkpoint path that is not there."""
    if cfg.precision not in ONNX_PRECISIONS:
        raise ConfigError(
            f"model.precision: {cfg.precision} is not available with model.backend "
            f"{cfg.backend} (use {' or '.join(ONNX_PRECISIONS)})"
        )
    resolve_source(cfg)  # with the torch backend's own message


def cached_export(
    identity: CheckpointIdentity | None, cache: EmbeddingCache, variant: str
) -> tuple[Path, dict[str, Any]] | None:
    """(model file, metadata) of a finished export (an onnx_variant) of this checkpoint."""
    return cached_artefact(identity, cache, onnx_file_names(variant), ONNX_FORMAT, *ONNX_KEYS)


def load_export(
    cfg: ModelConfig, runtime: str, open_model: Callable[[Path], Opened]
) -> LoadedExport[Opened]:
    """cfg's export for cfg.backend, opened with `open_model` (raising when the runtime
    rejects the file): the cached one (a damaged one is made again), else made now by the
    torch helper. `runtime` names the runtime in messages."""
    cache = EmbeddingCache.open(cfg.cache_dir)
    identity = identity_of(cfg)
    found = cached_export(identity, cache, onnx_variant(cfg.backend, cfg.precision))
    if found is not None:
        try:
            opened = open_model(found[0])
        except Exception as err:  # a damaged file: export again rather than fail for good
            logger.warning("cached ONNX model %s is unusable (%s); exporting again", found[0], err)
            found[0].unlink(missing_ok=True)
        else:
            return LoadedExport(opened, found[1], found[0], _text(cfg, cache, identity, found[1]))
    with tempfile.TemporaryDirectory(prefix="audio-monitor-onnx-") as name:
        # Without a cache the export goes to a temporary directory, is loaded, and goes.
        exported = _export(cfg, None if cache.enabled else Path(name))
        identity = identity or identity_of(cfg)  # the helper downloaded the checkpoint
        metadata = read_metadata(exported.with_suffix(".json"), ONNX_FORMAT, *ONNX_KEYS)
        if metadata is None:
            raise ModelError(
                f"cannot load CLAP model {cfg.name!r}: the ONNX export {exported} has no "
                "usable metadata"
            )
        try:
            opened = open_model(exported)
        except Exception as err:
            raise ModelError(
                f"cannot load CLAP model {cfg.name!r}: {runtime} rejects its export "
                f"{exported} ({first_line(err)})"
            ) from err
        model_path = exported if cache.enabled else None
    return LoadedExport(opened, metadata, model_path, _text(cfg, cache, identity, metadata))


def _text(
    cfg: ModelConfig,
    cache: EmbeddingCache,
    identity: CheckpointIdentity | None,
    metadata: dict[str, Any],
) -> CachedTextEmbedder:
    return CachedTextEmbedder(
        cache, identity, HelperTextEncoder(cfg), int(metadata["embedding_dim"])
    )


def _export(cfg: ModelConfig, out_dir: Path | None) -> Path:
    logger.info(
        "exporting the audio tower of %s (%s) to ONNX %s, in a torch helper process; "
        "on a small CPU this can take minutes",
        cfg.name,
        onnx_variant(cfg.backend, cfg.precision),
        "once" if out_dir is None else "(no cache: at every start)",
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="audio-monitor-export-") as work:
        extra = () if out_dir is None else ("--out-dir", str(out_dir))
        result = run_torch_helper("export", cfg, Path(work), *extra)
    logger.info("exported in %.1f s: %s", time.monotonic() - started, result["onnx"])
    return Path(result["onnx"])
