"""The text path alone: prompts embedded through the label cache, no audio tower loaded."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from monitor.config import ModelConfig
from monitor.errors import ModelError
from monitor.model.embedcache import (
    CachedTextEmbedder,
    EmbeddingCache,
    checkpoint_identity,
    locate_checkpoint,
)
from monitor.model.helper import HelperTextEncoder

logger = logging.getLogger(__name__)


class TextModel(Protocol):
    """What a search needs of a checkpoint: its text embeddings and logit scale."""

    model_id: str
    embedding_dim: int

    @property
    def logit_scale(self) -> float: ...

    def embed_text(self, prompts: Sequence[str]) -> np.ndarray: ...


class TextOnlyModel:
    """Prompts from the on-disk label cache, the rest embedded by the torch helper process;
    the logit scale read from the weights only when asked for (a softmax over texts)."""

    def __init__(self, cfg: ModelConfig, directory: Path, embedding_dim: int) -> None:
        self.model_id = cfg.name
        self.embedding_dim = embedding_dim
        self._cfg = cfg
        self._directory = directory
        self._scale: float | None = None
        identity = checkpoint_identity(cfg.name, cfg.revision, directory)
        self._embed = CachedTextEmbedder(
            EmbeddingCache.open(cfg.cache_dir), identity, HelperTextEncoder(cfg), embedding_dim
        )

    @property
    def logit_scale(self) -> float:
        if self._scale is None:
            # Reading the weights file imports torch: only a softmax over texts needs it.
            from monitor.model.tower import logit_scale

            self._scale = logit_scale(self._cfg, self._directory)
        return self._scale

    def embed_text(self, prompts: Sequence[str]) -> np.ndarray:
        return self._embed(prompts)


def load_text_model(cfg: ModelConfig) -> TextModel:
    """The text path of the configured checkpoint; the whole runner (which downloads it) when
    its files are not on this machine yet."""
    directory = locate_checkpoint(cfg.name, cfg.revision)
    if directory is None:
        from monitor.model.runner import load_clap

        logger.info("checkpoint %s not on this machine: loading the whole model", cfg.name)
        return load_clap(cfg)
    try:
        settings = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        dim = int(settings["projection_dim"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(
            f"cannot load CLAP model {cfg.name!r}: no projection_dim in {directory}/config.json "
            f"({err!r}); is it a CLAP checkpoint?"
        ) from err
    return TextOnlyModel(cfg, directory, dim)
