"""The audio tower in ONNX Runtime, so that the daemon scores without ever importing torch.

Everything torch computes is computed once and cached (monitor.model.embedcache): the exported
audio tower (per checkpoint and precision) with its feature settings and logit scale, and
the label embeddings. On a cache miss a helper process (`python -m monitor.model`) does the
torch work and exits, so even a cold start leaves no torch in this process; a warm start
spawns nothing.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monitor.config import ModelConfig
from monitor.errors import ConfigError, ModelError
from monitor.model.artefacts import (
    ONNX_FORMAT,
    ONNX_KEYS,
    ONNX_PRECISIONS,
    cached_artefact,
    onnx_file_names,
    read_metadata,
)
from monitor.model.batching import Positions, embed_through_stages
from monitor.model.checkpoint import identity_of, resolve_source
from monitor.model.embedcache import CachedTextEmbedder, CheckpointIdentity, EmbeddingCache
from monitor.model.features import MelSettings, NumpyMelFeatures, StreamingMel, check_window
from monitor.model.helper import HelperTextEncoder, run_torch_helper
from monitor.model.runtime import prepare_for_inference

logger = logging.getLogger(__name__)

ONNX_CUDA_PROVIDER = "CUDAExecutionProvider"


class OnnxClapRunner:
    """The exported audio tower in ONNX Runtime with numpy features; label embeddings come
    from the cache (or, once, from the torch helper process)."""

    def __init__(
        self,
        model_id: str,
        session: Any,
        metadata: dict[str, Any],
        text: CachedTextEmbedder,
        *,
        max_batch: int,
        model_path: Path | None,
    ) -> None:
        self.model_id = model_id
        self.backend = "onnx"
        self.precision = str(metadata["precision"])
        self.model_path = model_path
        self._session = session
        # Where the tower runs: ONNX Runtime falls back to the CPU provider on its own.
        self.device = "cuda" if session.get_providers()[0] == ONNX_CUDA_PROVIDER else "cpu"
        self._input = session.get_inputs()[0].name
        self._text = text
        settings = MelSettings.from_dict(metadata["features"])
        # One stream's windows at a time (the daemon's): positioned windows share frames.
        self._features = StreamingMel(NumpyMelFeatures(settings))
        self.sample_rate_hz: int = settings.sample_rate_hz
        self.max_samples: int = settings.max_samples
        self.logit_scale: float = float(metadata["logit_scale"])
        self.embedding_dim: int = int(metadata["embedding_dim"])
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
        (output,) = self._session.run(None, {self._input: features})
        embeddings = np.asarray(output, dtype=np.float32)
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


def cached_export(
    identity: CheckpointIdentity | None, cache: EmbeddingCache, precision: str
) -> tuple[Path, dict[str, Any]] | None:
    """(model file, metadata) of a finished export of this checkpoint and precision, if any."""
    names = onnx_file_names(precision)
    return cached_artefact(identity, cache, names, ONNX_FORMAT, *ONNX_KEYS)


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


def _export(cfg: ModelConfig, out_dir: Path | None) -> Path:
    logger.info(
        "exporting the audio tower of %s (%s) to ONNX %s, in a torch helper process; "
        "on a small CPU this can take minutes",
        cfg.name,
        cfg.precision,
        "once" if out_dir is None else "(no cache: at every start)",
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="audio-monitor-export-") as work:
        extra = () if out_dir is None else ("--out-dir", str(out_dir))
        result = run_torch_helper("export", cfg, Path(work), *extra)
    logger.info("exported in %.1f s: %s", time.monotonic() - started, result["onnx"])
    return Path(result["onnx"])


def load_onnx_runner(cfg: ModelConfig) -> OnnxClapRunner:
    """The onnx backend's runner: cached export (made on first use), cached label embeddings."""
    if cfg.precision not in ONNX_PRECISIONS:
        raise ConfigError(
            f"model.precision: {cfg.precision} is not available with model.backend onnx "
            f"(use {' or '.join(ONNX_PRECISIONS)})"
        )
    resolve_source(cfg)  # a wrong path fails at once, with the torch backend's own message
    try:
        import onnxruntime
    except ImportError as err:
        raise ModelError(
            "model.backend onnx needs ONNX Runtime: pip install 'audio-monitor[onnx]'"
        ) from err
    started = time.monotonic()
    prepare_for_inference()
    cache = EmbeddingCache.open(cfg.cache_dir)
    identity = identity_of(cfg)
    found = cached_export(identity, cache, cfg.precision)
    session: Any = None
    if found is not None:
        model_path: Path | None = found[0]
        metadata = found[1]
        try:
            session = _session(found[0], cfg)
        except Exception as err:  # a damaged file: export again rather than fail for good
            logger.warning("cached ONNX model %s is unusable (%s); exporting again", found[0], err)
            found[0].unlink(missing_ok=True)
    if session is None:
        with tempfile.TemporaryDirectory(prefix="audio-monitor-onnx-") as name:
            # Without a cache the export goes to a temporary directory, is loaded, and goes.
            exported = _export(cfg, None if cache.enabled else Path(name))
            identity = identity or identity_of(cfg)  # the helper downloaded the checkpoint
            loaded = read_metadata(exported.with_suffix(".json"), ONNX_FORMAT, *ONNX_KEYS)
            if loaded is None:
                raise ModelError(
                    f"cannot load CLAP model {cfg.name!r}: the ONNX export {exported} has no "
                    "usable metadata"
                )
            metadata = loaded
            try:
                session = _session(exported, cfg)
            except Exception as err:
                reason = (str(err).strip() or repr(err)).splitlines()[0]
                raise ModelError(
                    f"cannot load CLAP model {cfg.name!r}: ONNX Runtime rejects its export "
                    f"{exported} ({reason})"
                ) from err
            model_path = exported if cache.enabled else None
    text = CachedTextEmbedder(
        cache, identity, HelperTextEncoder(cfg), int(metadata["embedding_dim"])
    )
    runner = OnnxClapRunner(
        cfg.name, session, metadata, text, max_batch=cfg.max_batch, model_path=model_path
    )
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
