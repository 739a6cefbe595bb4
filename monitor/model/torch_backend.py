"""The CLAP boundary: checkpoints loaded with torch/transformers; text and audio to embeddings."""

from __future__ import annotations

import argparse
import functools
import gc
import json
import logging
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from monitor.config import ModelConfig, looks_like_path
from monitor.errors import ModelError, first_line
from monitor.model.embedcache import (
    CachedTextEmbedder,
    EmbeddingCache,
    checkpoint_identity,
    locate_checkpoint,
    producer_version,
    write_json_atomic,
)
from monitor.model.features import MelSettings, StreamingMel, TorchMelFeatures, check_window
from monitor.model.helper import (
    HelperTextEncoder,
    cached_artefact,
    identity_of,
    read_metadata,
    run_torch_helper,
)
from monitor.model.runtime import prepare_for_inference

logger = logging.getLogger(__name__)

_CHECKPOINT_FILES = "config.json, model.safetensors, the tokenizer and preprocessor files"
TEXT_BATCH = 64  # prompts per text forward pass: bounds memory for very long label lists
ONNX_FORMAT = 3  # bump when the exported graph changes (inputs, outputs, meaning or speed)
# Opset 20 has Gelu as one op: 67 -> 54 ms per int8 window against the opset 18 decomposition.
ONNX_OPSET = 20
ONNX_PRECISIONS = ("fp32", "int8")
# Largest difference allowed between the traced and the eager tower's normalised embeddings.
TRACE_TOLERANCE = 1e-5
GRAPH_FORMAT = 1  # bump when the traced graph changes (inputs, outputs, kernels)
GRAPH_KEYS = ("format", "precision", "features", "logit_scale", "embedding_dim", "torch")


class ClapRunner(Protocol):
    """What callers use of a loaded checkpoint, whichever backend runs it.

    embed_text: (len(prompts), dim) float32 rows, L2-normalised; embed_audio: the same for
    mono float32 windows of 1..max_samples samples at sample_rate_hz, with optionally each
    window's first sample in its stream at that rate (monitor.frames.Window.model_start_index):
    windows of one stream then share the feature frames they overlap.
    """

    model_id: str
    sample_rate_hz: int
    max_samples: int
    logit_scale: float
    embedding_dim: int

    def embed_text(self, prompts: Sequence[str]) -> np.ndarray: ...

    def embed_audio(
        self, windows: Sequence[np.ndarray], positions: Sequence[int | None] | None = None
    ) -> np.ndarray: ...


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
    ) -> None:
        self.model_id = model_id
        self.precision = precision
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
        self, windows: Sequence[np.ndarray], positions: Sequence[int | None] | None = None
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
                output = self._model(**features).audio_embeds
                result: np.ndarray = F.normalize(output.float(), dim=-1).numpy()
            else:
                # The graph is frozen and fused already; the graph executor's profiling runs
                # and re-optimised copies of it only cost memory (measured: 30 MB, same speed).
                # (The eager tower has no graph executor: the setting changes nothing there.)
                with torch.jit.optimized_execution(False):  # type: ignore[attr-defined]
                    result = self._tower(features["input_features"]).numpy()
        return result

    def embed_audio(
        self, windows: Sequence[np.ndarray], positions: Sequence[int | None] | None = None
    ) -> np.ndarray:
        """Embed mono float32 windows at sample_rate_hz: (len(windows), dim) float32.

        Each window must hold 1..max_samples samples: the checkpoint's extractor would crop a
        longer one at a random offset, so scores would no longer be reproducible. At most
        max_batch windows go through the model at once (memory on small devices). positions:
        see ClapRunner.
        """
        if len(windows) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        if positions is not None and len(positions) != len(windows):
            raise ValueError(f"{len(positions)} positions for {len(windows)} windows")
        step = self.max_batch
        parts = [
            self.embed_audio_features(
                self.audio_features(
                    windows[i : i + step], None if positions is None else positions[i : i + step]
                )
            )
            for i in range(0, len(windows), step)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class _TorchTextEncoder:
    """The checkpoint's text tower and tokenizer, loaded on first use and dropped on release()."""

    def __init__(self, cfg: ModelConfig, source: str, revision: str) -> None:
        self._cfg = cfg
        self._source = source
        self._revision = revision
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
            with _quiet_transformers():
                loaded: Any = ClapTextModelWithProjection.from_pretrained(
                    self._source,
                    revision=self._revision,
                    dtype=torch.float32,
                    output_loading_info=True,
                )
                tokenizer = AutoTokenizer.from_pretrained(self._source, revision=self._revision)
            model, info = loaded
        except Exception as err:
            raise ModelError(_load_error_message(self._cfg, self._source, err)) from err
        _check_complete(self._cfg, "text", info)
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


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers below errors: the load report lists every weight of the other
    tower as unexpected, which is exactly what loading one tower means."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def _check_complete(cfg: ModelConfig, tower: str, info: dict[str, Any]) -> None:
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ModelError(
            f"cannot load CLAP model {cfg.name!r}: the checkpoint lacks {tower} weights "
            f"({', '.join(missing[:3])}{more}); is it a CLAP checkpoint?"
        )


def read_logit_scale(directory: Path) -> float:
    """exp(logit_scale_a) of the checkpoint in `directory`, read from its weights file without
    building the model (the audio tower alone does not hold it). KeyError if absent."""
    import torch

    key = "logit_scale_a"
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.is_file() or index.is_file():
        path = single
        if not single.is_file():
            path = directory / json.loads(index.read_text(encoding="utf-8"))["weight_map"][key]
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as weights:
            value = weights.get_tensor(key)
    else:
        state = torch.load(
            directory / "pytorch_model.bin", map_location="cpu", weights_only=True, mmap=True
        )
        value = state[key]
    # exp in float32 by torch, exactly as ClapModel computes the pipeline's logit scale.
    return float(value.float().exp().reshape(-1)[0])


def _checkpoint_dir(cfg: ModelConfig, source: str) -> Path:
    """The local directory of the (now downloaded) checkpoint files."""
    directory = locate_checkpoint(source, cfg.revision)
    if directory is None:
        raise ModelError(
            f"cannot load CLAP model {cfg.name!r}: its files are not in the Hugging Face cache "
            "after loading; set model.name to a local directory holding the checkpoint"
        )
    return directory


def _logit_scale(cfg: ModelConfig, directory: Path) -> float:
    try:
        return read_logit_scale(directory)
    except (KeyError, OSError, ValueError) as err:
        raise ModelError(
            f"cannot load CLAP model {cfg.name!r}: no logit_scale_a in its weights ({err!r}); "
            "is it a CLAP checkpoint?"
        ) from err


def _load_audio_tower(cfg: ModelConfig, source: str, revision: str) -> tuple[Any, Any]:
    """(ClapAudioModelWithProjection in eval mode, ClapFeatureExtractor) of the checkpoint."""
    import torch
    from transformers import ClapAudioModelWithProjection, ClapFeatureExtractor

    try:
        with _quiet_transformers():
            # The weights first: their loader's errors tell "offline" from "no such repo".
            loaded: Any = ClapAudioModelWithProjection.from_pretrained(
                source, revision=revision, dtype=torch.float32, output_loading_info=True
            )
            extractor: Any = ClapFeatureExtractor.from_pretrained(source, revision=revision)
        model, info = loaded
    except Exception as err:
        raise ModelError(_load_error_message(cfg, source, err)) from err
    _check_complete(cfg, "audio", info)
    model.eval()
    return model, extractor


def _with_precision(model: Any, precision: str) -> Any:
    """The audio tower with its weights in `precision`; inputs and outputs stay float32."""
    import torch

    if precision == "bf16":
        model = model.to(torch.bfloat16)
        # The batch norm sees raw decibels (about -100..+20) where bfloat16 steps are 0.25 dB;
        # it stays float32 and hands bfloat16 to the rest (more accurate and, here, faster).
        norm = model.audio_model.audio_encoder.batch_norm.float()
        norm.register_forward_hook(lambda _module, _inputs, output: output.to(torch.bfloat16))
    elif precision == "int8":
        with warnings.catch_warnings():
            # torch.ao.quantization warns that it moves to torchao; it works on this torch.
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                model, {torch.nn.Linear}, dtype=torch.qint8
            )
    return model


def _window_attention(
    self: Any,
    hidden_states: Any,
    attention_mask: Any = None,
    output_attentions: bool | None = False,
) -> Any:
    """ClapAudioSelfAttention.forward in one scaled_dot_product_attention call.

    The eager version runs two batched matmuls over thousands of 64-token windows, which cost
    as much as all the tower's Linear layers together on a small CPU; the fused kernel gives
    the same result (max 1e-8 apart in fp32) in about half the tower's time. It never returns
    attention probabilities (output_attentions), which the monitor does not ask for.
    """
    import torch.nn.functional as F

    batch, tokens, _ = hidden_states.shape
    shape = (batch, tokens, -1, self.attention_head_size)
    query = self.query(hidden_states).view(shape).transpose(1, 2)
    key = self.key(hidden_states).view(shape).transpose(1, 2)
    value = self.value(hidden_states).view(shape).transpose(1, 2)
    heads = query.shape[1]
    bias = self.fused_position_bias  # (heads, tokens, tokens)
    if attention_mask is None:
        mask = bias.unsqueeze(0)
    else:
        # Shifted windows: window w of every image has its own mask. Folding the windows into
        # the head axis lets one (windows * heads) mask broadcast over the images.
        windows = attention_mask.shape[0]
        cached = self.fused_mask
        if cached is not None and cached[0] is attention_mask:
            mask = cached[1]
        else:
            mask = bias.unsqueeze(0) + attention_mask.unsqueeze(1).to(bias.dtype)
            mask = mask.view(1, windows * heads, tokens, tokens)
            # The layer's shift mask is memoised (_memoise_shift_mask): same object, same mask.
            self.fused_mask = (attention_mask, mask)
        folded = (batch // windows, windows * heads, tokens, -1)
        query, key, value = query.reshape(folded), key.reshape(folded), value.reshape(folded)
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    context = context.reshape(batch, heads, tokens, -1).transpose(1, 2)
    return (context.reshape(batch, tokens, heads * self.attention_head_size),)


def _memoise_shift_mask(layer: Any) -> None:
    """Make a Swin layer's get_attn_mask return one tensor per (height, width, dtype, device).

    The mask depends on nothing else, and the tower only reads it; building it costs a few
    small kernels per layer and forward pass, and its identity lets the fused attention reuse
    the mask it combined with the position bias.
    """
    import types

    original = layer.get_attn_mask
    masks: dict[tuple[Any, ...], Any] = {}

    def get_attn_mask(self: Any, height: int, width: int, dtype: Any, device: Any) -> Any:
        key = (int(height), int(width), dtype, device)
        if key not in masks:
            masks[key] = original(height, width, dtype, device)
        return masks[key]

    layer.get_attn_mask = types.MethodType(get_attn_mask, layer)


def _fuse_window_attention(model: Any) -> int:
    """Give every window attention of the audio tower the fused forward; returns how many.

    For inference only: the relative position bias is gathered once, in the weights' dtype, and
    the shift masks are built once per image size instead of in every forward pass.
    """
    import types

    import torch
    from transformers.models.clap.modeling_clap import ClapAudioLayer, ClapAudioSelfAttention

    fused = 0
    for found in model.modules():
        if isinstance(found, ClapAudioLayer):
            _memoise_shift_mask(found)
        if not isinstance(found, ClapAudioSelfAttention):
            continue
        module: Any = found
        tokens = module.window_size[0] * module.window_size[1]
        with torch.no_grad():
            table = module.relative_position_bias_table
            bias = table[module.relative_position_index.view(-1)].view(tokens, tokens, -1)
            module.fused_position_bias = bias.permute(2, 0, 1).contiguous()
        module.fused_mask = None
        module.forward = types.MethodType(_window_attention, module)
        fused += 1
    return fused


@functools.cache
def register_onednn_linear() -> bool:
    """Register audio_monitor::linear, a Linear layer through oneDNN; False if this torch has
    no oneDNN linear. Once per process; a saved graph that uses the op needs it registered
    before torch.jit.load.

    torch's own fp32 Linear calls MKL, which on AMD CPUs takes a generic code path: measured
    on a 2-core Zen 5, the tower's shapes ran at ~200 GFLOP/s through MKL and ~490 through
    oneDNN. The op is registered from Python because its oneDNN entry point takes an argument
    type (Scalar?[]) that TorchScript cannot record.
    """
    import torch

    available = torch.backends.mkldnn.is_available() and hasattr(  # type: ignore[no-untyped-call]
        torch.ops.mkldnn, "_linear_pointwise"
    )
    if available:
        # An explicit schema: this module's annotations are strings (PEP 563), which the
        # schema inference cannot read.
        @torch.library.custom_op(
            "audio_monitor::linear",
            mutates_args=(),
            schema="(Tensor x, Tensor weight, Tensor? bias) -> Tensor",
        )
        def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> Any:
            out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
            return out

        @linear.register_fake
        def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> Any:
            return x.new_empty((*x.shape[:-1], weight.shape[0]))

    return available


def _onednn_forward(self: Any, hidden_states: Any) -> Any:
    import torch

    return torch.ops.audio_monitor.linear(hidden_states, self.weight, self.bias)


def _linear_through_onednn(model: Any) -> int:
    """Route the fp32 tower's Linear layers through oneDNN; returns how many (none when
    oneDNN is missing or disagrees with torch on a probe)."""
    import types

    import torch

    if not register_onednn_linear():
        return 0
    layers = [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m.weight.dtype == torch.float32
    ]
    if not layers:
        return 0
    probe_layer = layers[0]
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(3, 5, probe_layer.in_features, generator=generator)
    with torch.no_grad():
        expected = torch.nn.functional.linear(probe, probe_layer.weight, probe_layer.bias)
        got = torch.ops.audio_monitor.linear(probe, probe_layer.weight, probe_layer.bias)
    scale = float(expected.abs().max()) + 1.0
    if not float((got - expected).abs().max()) <= 1e-5 * scale:
        logger.warning("Linear layers stay on torch's default: oneDNN disagrees on a probe")
        return 0
    for layer in layers:
        layer.forward = types.MethodType(_onednn_forward, layer)  # type: ignore[method-assign]
    return len(layers)


def load_clap(cfg: ModelConfig) -> ClapRunner:
    """Load the configured CLAP checkpoint; ModelError says how to provide missing weights.

    backend "torch": the audio tower in this process (the text tower only for prompts missing
    from the embedding cache); backend "onnx": see monitor.model.onnx_backend (never imports torch).
    """
    if cfg.backend == "onnx":
        from monitor.model.onnx_backend import load_onnx_runner

        return load_onnx_runner(cfg)
    return load_torch_runner(cfg)


def load_torch_runner(cfg: ModelConfig) -> TorchClapRunner:
    """The torch backend's runner: the cached TorchScript graph (built on first use in a
    helper process), or the eager model when model.trace is false or tracing is refused."""
    source = resolve_source(cfg)  # before the slow imports: a wrong path fails at once
    import torch

    started = time.monotonic()
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    prepare_for_inference()
    runner = _load_graph_runner(cfg) if cfg.trace else None
    if runner is None:
        runner = _load_eager_runner(cfg, source)
    logger.info(
        "loaded CLAP audio tower %s (%s, %s): %d-d embeddings, %d torch threads, %.2f s",
        cfg.name,
        cfg.precision,
        "TorchScript graph" if runner.traced else "eager",
        runner.embedding_dim,
        torch.get_num_threads(),
        time.monotonic() - started,
    )
    return runner


def graph_file_names(precision: str) -> tuple[str, str]:
    """(graph file, metadata file) of a traced tower, inside the checkpoint's artefact dir."""
    stem = f"audio-ts-v{GRAPH_FORMAT}-{precision}"
    return f"{stem}.pt", f"{stem}.json"


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


def _prepared_tower(cfg: ModelConfig, source: str) -> tuple[Any, Any, Path]:
    """(the audio tower in cfg.precision with the fast kernels, its extractor, checkpoint dir)."""
    revision = cfg.revision if cfg.revision is not None else "main"  # transformers' default
    model, extractor = _load_audio_tower(cfg, source, revision)
    directory = _checkpoint_dir(cfg, source)
    model = _with_precision(model, cfg.precision)
    _fuse_window_attention(model)
    if cfg.precision == "fp32":
        _linear_through_onednn(model)
    return model, extractor, directory


def _mel_settings(extractor: Any) -> MelSettings | None:
    try:
        return MelSettings.from_extractor(extractor.to_dict())
    except ValueError as err:
        logger.info("features by the checkpoint's own extractor: %s", err)
        return None


def _load_eager_runner(cfg: ModelConfig, source: str) -> TorchClapRunner:
    """The transformers audio tower in this process; the text tower too, on a cache miss."""
    from transformers.utils import logging as hf_logging

    if not sys.stderr.isatty():
        # Progress bars redrawn with carriage returns are noise in the journal and in log files.
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model, extractor, directory = _prepared_tower(cfg, source)
    settings = _mel_settings(extractor)
    cache = EmbeddingCache.open(cfg.cache_dir)
    identity = checkpoint_identity(cfg.name, cfg.revision, directory)
    revision = cfg.revision if cfg.revision is not None else "main"
    encoder = _TorchTextEncoder(cfg, source, revision)
    embedding_dim = int(model.config.projection_dim)
    return TorchClapRunner(
        cfg.name,
        _normalised_tower(model),
        settings=settings,
        text=CachedTextEmbedder(cache, identity, encoder, embedding_dim),
        logit_scale=_logit_scale(cfg, directory),
        embedding_dim=embedding_dim,
        precision=cfg.precision,
        max_batch=cfg.max_batch,
        traced=False,
        model=model,
        extractor=extractor,
        text_encoder=encoder,
    )


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
    model, extractor, directory = _prepared_tower(cfg, source)
    settings = _mel_settings(extractor)
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
        "logit_scale": _logit_scale(cfg, directory),
        "features": settings.to_dict(),
        "torch": torch.__version__,
        "producer": producer_version(),
    }


def _trace_tower(model: Any, settings: MelSettings, precision: str) -> Any:
    """The audio tower (features -> normalised embeddings) as a frozen TorchScript graph;
    Untraceable when it cannot be traced faithfully (then the eager model runs).

    The HTSAT forward is about 1,500 small operations, each dispatched from Python; one graph
    saves that overhead (measured on an Intel 2-core VM, 10 s windows, interleaved in one
    process: int8 53.2 -> 45.9 ms, bf16 no change; the fp32 figure then, 89.5 -> 81.7 ms,
    included optimize_for_inference, no longer used) and, saved to disk, lets the
    daemon run the tower without importing transformers. torch.jit is deprecated in torch
    2.13 but works; torch.compile would need a C++ compiler on the device. The graph is
    checked against the eager model on two probe windows (also a batch, as tracing fixes
    shapes) before it is used.
    """
    import torch

    tower = _normalised_tower(model)
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


def _normalised_tower(model: Any) -> Any:
    """The graph to export or trace: features in, L2-normalised float32 embeddings out."""
    import torch
    import torch.nn.functional as F

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_features: torch.Tensor) -> torch.Tensor:
            embeds = self.model(input_features=input_features).audio_embeds
            return F.normalize(embeds.float(), dim=-1)

    return Tower().eval()


def onnx_file_names(precision: str) -> tuple[str, str]:
    """(model file, metadata file) of an export, inside the checkpoint's artefact directory."""
    stem = f"audio-v{ONNX_FORMAT}-{precision}"
    return f"{stem}.onnx", f"{stem}.json"


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
    revision = cfg.revision if cfg.revision is not None else "main"
    model, extractor = _load_audio_tower(cfg, source, revision)
    directory = _checkpoint_dir(cfg, source)
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
    if cfg.precision == "fp32":
        return fp32_path
    from onnxruntime.quantization import QuantType, quantize_dynamic

    name, meta = onnx_file_names(cfg.precision)
    with tempfile.TemporaryDirectory(dir=out_dir) as work:
        staged = Path(work) / name
        quantize_dynamic(fp32_path, staged, weight_type=QuantType.QInt8)
        staged.replace(out_dir / name)
    write_json_atomic(out_dir / meta, {**metadata, "precision": cfg.precision})
    logger.info("quantised the audio tower to int8: %s", out_dir / name)
    return out_dir / name


def _interpolation_as_matmul(model: Any, frames: int) -> None:
    """Stretch `frames` to the tower's input length with a constant matrix, for export.

    HTSAT stretches the 1001 frames to 1024 with a bicubic resize (align_corners, so the mel
    axis is left exactly as it is). ONNX Runtime's Resize took 7-11 ms of a ~100 ms window
    here; the same coefficients as one MatMul take well under 1 ms (torch's own resize is
    fast, so only the exported graph gets this).
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
    tower = _normalised_tower(model)
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


def embed_prompts(cfg: ModelConfig, prompts: Sequence[str]) -> np.ndarray:
    """Embed prompts with the text tower alone, no cache (the onnx backend's helper)."""
    source = resolve_source(cfg)
    revision = cfg.revision if cfg.revision is not None else "main"
    if cfg.torch_threads > 0:
        import torch

        torch.set_num_threads(cfg.torch_threads)
    return _TorchTextEncoder(cfg, source, revision)(prompts)


def _helper_main(argv: Sequence[str]) -> int:
    """`python -m monitor.model export|trace|embed-text`: the work that needs transformers, in
    a process of its own, so that the daemon never imports it (nor torch, with onnx)."""
    parser = argparse.ArgumentParser(prog="python -m monitor.model")
    parser.add_argument("command", choices=("export", "trace", "embed-text"))
    parser.add_argument("--config", required=True, help="ModelConfig as JSON")
    parser.add_argument("--result", required=True, type=Path, help="JSON result file")
    parser.add_argument("--out-dir", type=Path, help="export, trace: directory, not the cache")
    parser.add_argument("--prompts", type=Path, help="embed-text: JSON list of prompts")
    parser.add_argument("--embeddings", type=Path, help="embed-text: output .npy")
    args = parser.parse_args(list(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    cfg = ModelConfig.model_validate_json(args.config)
    try:
        if args.command == "export":
            path = export_onnx(cfg, args.out_dir)
            result: dict[str, Any] = {"onnx": str(path)}
        elif args.command == "trace":
            try:
                result = {"graph": str(build_graph(cfg, args.out_dir))}
            except Untraceable as err:
                result = {"refused": str(err)}
        else:
            prompts = json.loads(args.prompts.read_text(encoding="utf-8"))
            np.save(args.embeddings, embed_prompts(cfg, prompts))
            result = {"embeddings": str(args.embeddings)}
    except ModelError as err:
        result = {"error": str(err)}
    args.result.write_text(json.dumps(result), encoding="utf-8")
    return 0 if "error" not in result else 1


def resolve_source(cfg: ModelConfig) -> str:
    """The argument for from_pretrained: a local directory if there is one, else the hub id."""
    path = Path(cfg.name).expanduser()
    if path.is_dir():
        return str(path)
    if looks_like_path(cfg.name):
        kind = "is not a directory" if path.exists() else "no such directory"
        raise ModelError(
            f"cannot load CLAP model {cfg.name!r}: {kind}; set model.name to a directory holding "
            f"the checkpoint ({_CHECKPOINT_FILES}), e.g. made with "
            "`hf download laion/clap-htsat-unfused --local-dir DIR`, or to a hub id"
        )
    return cfg.name


def _causes(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _load_error_message(cfg: ModelConfig, source: str, err: BaseException) -> str:
    """One line: what went wrong loading the checkpoint and how to provide it."""
    from huggingface_hub import constants as hub_constants
    from huggingface_hub import errors as hub_errors

    head = f"cannot load CLAP model {cfg.name!r}"
    if cfg.revision is not None:
        head += f" (revision {cfg.revision!r})"
    chain = _causes(err)

    def found(kind: type[BaseException]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, kind)), None)

    if Path(source).is_dir():
        return (
            f"{head}: the directory is incomplete or not a CLAP checkpoint ({first_line(err)}); "
            f"it needs {_CHECKPOINT_FILES}, as `hf download laion/clap-htsat-unfused "
            "--local-dir DIR` writes them"
        )
    revision = f" --revision {cfg.revision}" if cfg.revision is not None else ""
    download = f"`hf download {cfg.name}{revision}`"
    elsewhere = (
        f"download them on a connected machine ({download}, or `huggingface-cli download` with "
        f"older hubs) and copy the cache ({hub_constants.HF_HUB_CACHE}), or set model.name to a "
        "local directory holding the checkpoint"
    )
    gated = found(hub_errors.GatedRepoError)
    if gated is not None:
        return (
            f"{head}: the repository is gated; accept its terms on huggingface.co and log in "
            f"(`hf auth login`), or set model.name to a local directory holding the checkpoint"
        )
    if found(hub_errors.RepositoryNotFoundError) is not None:
        return (
            f"{head}: no such repository on the Hugging Face hub (or it is private: log in with "
            "`hf auth login`); check model.name or set it to a local directory holding the "
            "checkpoint"
        )
    if found(hub_errors.RevisionNotFoundError) is not None:
        return f"{head}: no such revision on the hub; check model.revision"
    if found(hub_errors.HFValidationError) is not None:
        return (
            f"{head}: neither a local directory nor a valid hub id ('owner/name'); set model.name "
            "to a directory holding the checkpoint or to a hub id"
        )
    not_cached = (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled)
    if any(isinstance(e, not_cached) for e in chain):
        if hub_constants.is_offline_mode():
            return (
                f"{head}: weights not available offline (HF_HUB_OFFLINE is set and they are not "
                f"in the Hugging Face cache); {elsewhere}, or unset HF_HUB_OFFLINE to allow "
                "downloading"
            )
        # The innermost exception names the network failure (DNS, refused, timeout).
        cause = f" ({first_line(chain[-1])})" if len(chain) > 2 else ""
        return f"{head}: the hub is unreachable{cause} and the weights are not cached; {elsewhere}"
    if found(hub_errors.EntryNotFoundError) is not None:
        return (
            f"{head}: the repository lacks a file of a CLAP checkpoint ({first_line(err)}); "
            "check model.name and model.revision"
        )
    return f"{head}: {first_line(err)}; {elsewhere}"
