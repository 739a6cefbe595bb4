"""The torch backend: the audio tower as a cached TorchScript graph or the eager model."""

from __future__ import annotations

import gc
import logging
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monitor.config import ModelConfig
from monitor.errors import ModelError, first_line
from monitor.model.artefacts import (
    GRAPH_FORMAT,
    GRAPH_KEYS,
    cached_artefact,
    graph_file_names,
    read_metadata,
)
from monitor.model.batching import Positions, embed_through_stages
from monitor.model.checkpoint import (
    check_complete,
    identity_of,
    load_error_message,
    resolve_source,
    revision_of,
)
from monitor.model.embedcache import CachedTextEmbedder, EmbeddingCache, checkpoint_identity
from monitor.model.features import MelSettings, StreamingMel, check_window
from monitor.model.helper import HelperTextEncoder, run_torch_helper
from monitor.model.kernels import register_onednn_linear
from monitor.model.runtime import prepare_for_inference
from monitor.model.torch_features import TorchMelFeatures
from monitor.model.tower import (
    logit_scale,
    mel_settings,
    normalised_tower,
    prepared_tower,
    quiet_transformers,
)

logger = logging.getLogger(__name__)

TEXT_BATCH = 64  # prompts per text forward pass: bounds memory for very long label lists


class TorchClapRunner:
    """The audio tower in torch, with label embeddings from the cache.

    The daemon's path is a TorchScript graph of the tower, built once and cached on disk: the
    process then imports torch but not transformers, and holds no text tower. The eager path
    (model.trace false, or a tower that cannot be traced) runs the transformers model and
    loads the text tower in this process while prompts miss the cache.
    """

    def __init__(
        self,
        model_id: str,
        tower: Any,
        *,
        settings: MelSettings | None,
        text: CachedTextEmbedder,
        logit_scale: float,
        embedding_dim: int,
        precision: str,
        max_batch: int,
        traced: bool,
        model: Any = None,
        extractor: Any = None,
        text_encoder: _TorchTextEncoder | None = None,
        device: str = "cpu",
    ) -> None:
        self.model_id = model_id
        self.backend = "torch"
        self.precision = precision
        self.device = device  # where the tower runs: features go there, embeddings come back
        # features -> L2-normalised float32 embeddings: the graph, or the eager model wrapped.
        self._tower = tower
        self.traced = traced
        # The eager model and the checkpoint's extractor, kept for the fused architecture
        # (4 stacked crops and an is_longer flag), which only the extractor computes.
        self._model = model
        self._extractor = extractor
        # One stream's windows at a time (the daemon's): positioned windows share frames.
        self._features = StreamingMel(TorchMelFeatures(settings)) if settings is not None else None
        self._text = text
        # The eager path's in-process text tower, released once scoring starts.
        self._text_encoder = text_encoder
        if settings is not None:
            self.sample_rate_hz: int = settings.sample_rate_hz
            self.max_samples: int = settings.max_samples
        else:
            self.sample_rate_hz = int(extractor.sampling_rate)
            self.max_samples = int(extractor.nb_max_samples)
        self.logit_scale: float = logit_scale
        self.embedding_dim: int = embedding_dim
        self.max_batch = max_batch
        # Audio may come from several threads (the worker, an eval pool): one forward pass at
        # a time keeps torch's intra-op threads from being oversubscribed.
        self._lock = threading.Lock()

    def embed_text(self, prompts: Sequence[str]) -> np.ndarray:
        """Embed text prompts: (len(prompts), dim) float32, each row L2-normalised."""
        return self._text(prompts)

    def audio_features(
        self, windows: Sequence[np.ndarray], positions: Positions | None = None
    ) -> dict[str, Any]:
        """The model's inputs for checked windows (input_features as the extractor makes them);
        positions: each window's start in its stream (see ClapRunner), or None."""
        batch = [
            check_window(i, w, self.max_samples, self.sample_rate_hz) for i, w in enumerate(windows)
        ]
        if self._features is not None:
            return {"input_features": self._features(batch, positions)}
        extracted = self._extractor(batch, sampling_rate=self.sample_rate_hz, return_tensors="pt")
        return {"input_features": extracted["input_features"], "is_longer": extracted["is_longer"]}

    def embed_audio_features(self, features: dict[str, Any]) -> np.ndarray:
        """Embeddings of audio_features() output: (n, dim) float32, L2-normalised."""
        import torch
        import torch.nn.functional as F

        if self._text_encoder is not None:
            self._text_encoder.release()  # scoring has started: the prompts are embedded by now
        with self._lock, torch.inference_mode():
            if "is_longer" in features:
                inputs = {name: value.to(self.device) for name, value in features.items()}
                output = self._model(**inputs).audio_embeds
                result: np.ndarray = F.normalize(output.float(), dim=-1).cpu().numpy()
            else:
                # The graph is frozen and fused already; the graph executor's profiling runs
                # and re-optimised copies of it only cost memory, for no speed.
                # (The eager tower has no graph executor: the setting changes nothing there.)
                with torch.jit.optimized_execution(False):  # type: ignore[attr-defined]
                    tower_input = features["input_features"].to(self.device)
                    result = self._tower(tower_input).cpu().numpy()
        return result

    def embed_audio(
        self, windows: Sequence[np.ndarray], positions: Positions | None = None
    ) -> np.ndarray:
        """Embed mono float32 windows at sample_rate_hz: (len(windows), dim) float32.

        Each window must hold 1..max_samples samples: the checkpoint's extractor would crop a
        longer one at a random offset, so scores would no longer be reproducible. At most
        max_batch windows go through the model at once (memory on small devices). positions:
        see ClapRunner.
        """
        return embed_through_stages(self, windows, positions)


class _TorchTextEncoder:
    """The checkpoint's text tower and tokenizer, loaded on first use and dropped on release()."""

    def __init__(self, cfg: ModelConfig, source: str) -> None:
        self._cfg = cfg
        self._source = source
        self._revision = revision_of(cfg)
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def __call__(self, prompts: Sequence[str]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            model, tokenizer = self._loaded
            rows = []
            for start in range(0, len(prompts), TEXT_BATCH):
                chunk = list(prompts[start : start + TEXT_BATCH])
                inputs = tokenizer(chunk, padding=True, truncation=True, return_tensors="pt")
                with torch.inference_mode():
                    embeds = model(**inputs).text_embeds
                    rows.append(F.normalize(embeds.float(), dim=-1).numpy())
            return np.concatenate(rows).astype(np.float32, copy=False)

    def _load(self) -> tuple[Any, Any]:
        import torch
        from transformers import AutoTokenizer, ClapTextModelWithProjection

        started = time.monotonic()
        try:
            with quiet_transformers():
                loaded: Any = ClapTextModelWithProjection.from_pretrained(
                    self._source,
                    revision=self._revision,
                    dtype=torch.float32,
                    output_loading_info=True,
                )
                tokenizer = AutoTokenizer.from_pretrained(self._source, revision=self._revision)
            model, info = loaded
        except Exception as err:
            raise ModelError(load_error_message(self._cfg, self._source, err)) from err
        check_complete(self._cfg, "text", info)
        model.eval()
        logger.info("loaded the text tower to embed prompts (%.2f s)", time.monotonic() - started)
        return model, tokenizer

    def release(self) -> None:
        """Drop the text tower (its memory goes back once no prompt needs embedding)."""
        if self._loaded is None:
            return
        with self._lock:
            self._loaded = None
        gc.collect()
        logger.debug("released the text tower")


def embed_prompts(cfg: ModelConfig, prompts: Sequence[str]) -> np.ndarray:
    """Embed prompts with the text tower alone, no cache (the onnx backend's helper)."""
    source = resolve_source(cfg)
    if cfg.torch_threads > 0:
        import torch

        torch.set_num_threads(cfg.torch_threads)
    return _TorchTextEncoder(cfg, source)(prompts)


def torch_cuda_problem() -> str | None:
    """Why torch cannot run the tower on an NVIDIA GPU here; None if it can."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device"
    return None


def torch_gpu_name() -> str:
    """The first CUDA device's name, "" when torch cannot tell."""
    import torch

    try:
        return str(torch.cuda.get_device_name(0))
    except Exception:  # the name is for logs and the choice cache's key only
        return ""


def load_torch_runner(cfg: ModelConfig) -> TorchClapRunner:
    """The torch backend's runner: the cached TorchScript graph (built on first use in a
    helper process), or the eager model when model.trace is false or tracing is refused."""
    source = resolve_source(cfg)  # before the slow imports: a wrong path fails at once
    import torch

    started = time.monotonic()
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    prepare_for_inference()
    cuda = cfg.device == "cuda"  # resolved by monitor.model.device before this
    # The graph is traced with CPU kernels (oneDNN-packed weights): a GPU runs the model.
    runner = _load_graph_runner(cfg) if cfg.trace and not cuda else None
    if runner is None:
        runner = _load_eager_runner(cfg, source)
    logger.info(
        "loaded CLAP audio tower %s (%s, %s) on %s: %d-d embeddings, %d torch threads, %.2f s",
        cfg.name,
        cfg.precision,
        "TorchScript graph" if runner.traced else "eager",
        f"cuda ({torch_gpu_name()})" if cuda else "cpu",
        runner.embedding_dim,
        torch.get_num_threads(),
        time.monotonic() - started,
    )
    return runner


def _load_graph(path: Path) -> Any:
    import torch

    register_onednn_linear()  # before loading: an fp32 graph calls it
    with warnings.catch_warnings():
        # int8: "quantized tensor creation functions are deprecated"; the graph runs on 2.13.
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]


def _load_graph_runner(cfg: ModelConfig) -> TorchClapRunner | None:
    """The runner over the cached graph (built first if missing); None if it cannot be traced.

    Neither transformers nor a text tower comes into this process: the graph is built and
    prompts missing from the cache are embedded by `python -m monitor.model` helpers.
    """
    import torch

    cache = EmbeddingCache.open(cfg.cache_dir)
    identity = identity_of(cfg)
    names = graph_file_names(cfg.precision)
    found = cached_artefact(identity, cache, names, GRAPH_FORMAT, *GRAPH_KEYS)
    graph: Any = None
    metadata: dict[str, Any] = {}
    if found is not None and found[1]["torch"] != torch.__version__:
        logger.info("the cached graph is from torch %s; tracing again", found[1]["torch"])
        found = None
    if found is not None:
        try:
            graph, metadata = _load_graph(found[0]), found[1]
        except Exception as err:  # a damaged file: trace again rather than fail for good
            logger.warning("cached graph %s is unusable (%s); tracing again", found[0], err)
            found[0].unlink(missing_ok=True)
            graph = None
    if graph is None:
        with tempfile.TemporaryDirectory(prefix="audio-monitor-graph-") as name:
            # The helper's output is not shown: say what may take long before it starts.
            logger.info(
                "tracing the audio tower of %s (%s) in a torch helper process, %s%s",
                cfg.name,
                cfg.precision,
                "once" if cache.enabled else "at every start (no cache)",
                "" if identity is not None else "; downloading the checkpoint first",
            )
            extra = () if cache.enabled else ("--out-dir", name)
            result = run_torch_helper("trace", cfg, Path(name), *extra, purpose="for torch")
            identity = identity or identity_of(cfg)  # the helper downloaded the checkpoint
            if "refused" in result:
                logger.warning("running the audio tower eagerly: %s", result["refused"])
                return None
            path = Path(result["graph"])
            loaded = read_metadata(path.with_suffix(".json"), GRAPH_FORMAT, *GRAPH_KEYS)
            if loaded is None:
                raise ModelError(
                    f"cannot load CLAP model {cfg.name!r}: the traced graph {path} has no "
                    "usable metadata"
                )
            try:
                graph, metadata = _load_graph(path), loaded
            except Exception as err:
                raise ModelError(
                    f"cannot load CLAP model {cfg.name!r}: torch cannot load its traced graph "
                    f"{path} ({first_line(err)})"
                ) from err
    embedding_dim = int(metadata["embedding_dim"])
    text = CachedTextEmbedder(cache, identity, HelperTextEncoder(cfg), embedding_dim)
    return TorchClapRunner(
        cfg.name,
        graph,
        settings=MelSettings.from_dict(metadata["features"]),
        text=text,
        logit_scale=float(metadata["logit_scale"]),
        embedding_dim=embedding_dim,
        precision=cfg.precision,
        max_batch=cfg.max_batch,
        traced=True,
    )


def _load_eager_runner(cfg: ModelConfig, source: str) -> TorchClapRunner:
    """The transformers audio tower in this process; the text tower too, on a cache miss."""
    from transformers.utils import logging as hf_logging

    if not sys.stderr.isatty():
        # Progress bars redrawn with carriage returns are noise in the journal and in log files.
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model, extractor, directory = prepared_tower(cfg, source)
    settings = mel_settings(extractor)
    cache = EmbeddingCache.open(cfg.cache_dir)
    identity = checkpoint_identity(cfg.name, cfg.revision, directory)
    encoder = _TorchTextEncoder(cfg, source)
    embedding_dim = int(model.config.projection_dim)
    return TorchClapRunner(
        cfg.name,
        normalised_tower(model),
        settings=settings,
        text=CachedTextEmbedder(cache, identity, encoder, embedding_dim),
        logit_scale=logit_scale(cfg, directory),
        embedding_dim=embedding_dim,
        precision=cfg.precision,
        max_batch=cfg.max_batch,
        traced=False,
        model=model,
        extractor=extractor,
        text_encoder=encoder,
        device="cuda" if cfg.device == "cuda" else "cpu",
    )
