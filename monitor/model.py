"""The CLAP boundary: loads a checkpoint with transformers, turns text and audio into embeddings."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monitor.config import ModelConfig
from monitor.errors import ModelError

logger = logging.getLogger(__name__)

_CHECKPOINT_FILES = "config.json, model.safetensors, the tokenizer and preprocessor files"


class ClapRunner:
    """A loaded CLAP checkpoint: text prompts and audio windows in, L2-normalised embeddings out.

    The rest of the daemon talks only to this class; torch and transformers stay behind it.
    """

    def __init__(self, model_id: str, model: Any, processor: Any) -> None:
        self.model_id = model_id
        self._model = model
        self._tokenizer = processor.tokenizer
        self._feature_extractor = processor.feature_extractor
        self.sample_rate_hz: int = int(self._feature_extractor.sampling_rate)
        self.max_samples: int = int(self._feature_extractor.nb_max_samples)
        self.logit_scale: float = float(model.logit_scale_a.detach().exp())
        self.embedding_dim: int = int(model.config.projection_dim)
        # Text is embedded at start on one thread and audio on the worker thread; the lock keeps
        # two forward passes from ever sharing the model at once.
        self._lock = threading.Lock()

    def embed_text(self, prompts: Sequence[str]) -> np.ndarray:
        """Embed text prompts: (len(prompts), dim) float32, each row L2-normalised."""
        if isinstance(prompts, str):
            raise TypeError("embed_text takes a sequence of prompts, not a single string")
        if len(prompts) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        import torch

        inputs = self._tokenizer(list(prompts), padding=True, truncation=True, return_tensors="pt")
        with self._lock, torch.inference_mode():
            output = self._model.get_text_features(**inputs)
            return _normalised_numpy(output)

    def embed_audio(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Embed mono float32 windows at sample_rate_hz in one batch: (len(windows), dim) float32.

        Each window must hold 1..max_samples samples: the checkpoint's extractor would crop a
        longer one at a random offset, so scores would no longer be reproducible.
        """
        if len(windows) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        batch = [self._checked_window(i, window) for i, window in enumerate(windows)]
        import torch

        # Called exactly as the zero-shot-audio-classification pipeline calls the extractor.
        features = self._feature_extractor(
            batch, sampling_rate=self.sample_rate_hz, return_tensors="pt"
        ).to(self._model.dtype)
        with self._lock, torch.inference_mode():
            output = self._model.get_audio_features(**features)
            return _normalised_numpy(output)

    def _checked_window(self, index: int, window: np.ndarray) -> np.ndarray:
        samples = np.asarray(window, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"window {index}: expected mono samples, got shape {samples.shape}")
        if samples.size == 0:
            raise ValueError(f"window {index}: no samples")
        if samples.size > self.max_samples:
            raise ValueError(
                f"window {index}: {samples.size} samples is longer than the model's "
                f"{self.max_samples} ({self.max_samples / self.sample_rate_hz:g} s at "
                f"{self.sample_rate_hz} Hz)"
            )
        if not np.isfinite(samples).all():
            raise ValueError(f"window {index}: contains NaN or infinite samples")
        return samples


def _normalised_numpy(output: Any) -> np.ndarray:
    """The pooled, projected features of a get_*_features call as L2-normalised float32 numpy."""
    import torch
    import torch.nn.functional as F

    # transformers 5 returns a ModelOutput whose pooler_output holds the projection; older
    # releases returned the tensor itself.
    features = output if isinstance(output, torch.Tensor) else output.pooler_output
    result: np.ndarray = F.normalize(features.float(), dim=-1).cpu().numpy()
    return result


def load_clap(cfg: ModelConfig) -> ClapRunner:
    """Load the configured CLAP checkpoint; ModelError says how to provide missing weights."""
    source = _resolve_source(cfg)  # before the slow imports: a wrong path fails at once
    import torch
    from transformers import ClapModel, ClapProcessor
    from transformers.utils import logging as hf_logging

    if not sys.stderr.isatty():
        # Progress bars redrawn with carriage returns are noise in the journal and in log files.
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    started = time.monotonic()
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    revision = cfg.revision if cfg.revision is not None else "main"  # transformers' default
    try:
        model: Any = ClapModel.from_pretrained(source, revision=revision)
        processor: Any = ClapProcessor.from_pretrained(source, revision=revision)
    except Exception as err:
        raise ModelError(_load_error_message(cfg, source, err)) from err
    model.eval()
    runner = ClapRunner(cfg.name, model, processor)
    parameters = sum(p.numel() for p in model.parameters())
    logger.info(
        "loaded CLAP model %s: %d parameters, %d-d embeddings, %d torch threads, %.2f s",
        cfg.name,
        parameters,
        runner.embedding_dim,
        torch.get_num_threads(),
        time.monotonic() - started,
    )
    return runner


def _looks_like_path(name: str) -> bool:
    # A hub id is "name" or "owner/name"; anything else can only be meant as a directory.
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def _resolve_source(cfg: ModelConfig) -> str:
    """The argument for from_pretrained: a local directory if there is one, else the hub id."""
    path = Path(cfg.name).expanduser()
    if path.is_dir():
        return str(path)
    if _looks_like_path(cfg.name):
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


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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
            f"{head}: the directory is incomplete or not a CLAP checkpoint ({_first_line(err)}); "
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
        cause = f" ({_first_line(chain[-1])})" if len(chain) > 2 else ""
        return f"{head}: the hub is unreachable{cause} and the weights are not cached; {elsewhere}"
    if found(hub_errors.EntryNotFoundError) is not None:
        return (
            f"{head}: the repository lacks a file of a CLAP checkpoint ({_first_line(err)}); "
            "check model.name and model.revision"
        )
    return f"{head}: {_first_line(err)}; {elsewhere}"
