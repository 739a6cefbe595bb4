"""What the offline commands (classify, eval) share: model and label sets from flags, batching."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from monitor.config import (
    DEFAULT_PROMPT_TEMPLATE,
    Config,
    LabelSetConfig,
    ModelConfig,
    ScoringMode,
    load_config,
)
from monitor.errors import ConfigError
from monitor.model import batching


def config_from_args(args: argparse.Namespace) -> Config | None:
    """The --config file (without requiring a source), or None."""
    if getattr(args, "config", None) is None:
        return None
    return load_config(args.config, require_source=False)


def model_from_args(
    args: argparse.Namespace, config: Config | None, *, reproducible: bool = True
) -> ModelConfig:
    """--model overrides the config's model, which defaults to laion/clap-htsat-unfused.

    --batch-size becomes the runner's max_batch: otherwise the runner would split the
    offline commands' batches again at the daemon's default size. `reproducible`: precision
    auto becomes fp32 (backend auto torch), so classify and eval give the same scores on
    every machine; auto picks by speed among paths that agree only within cosine 0.999.
    """
    base = config.model if config is not None else ModelConfig()
    update: dict[str, Any] = {}
    if reproducible and base.precision == "auto":
        update["precision"] = "fp32"
        if base.backend == "auto":
            update["backend"] = "torch"
    if getattr(args, "model", None):
        update["name"] = args.model
    if getattr(args, "batch_size", None) is not None:
        update["max_batch"] = args.batch_size
    return base.model_copy(update=update) if update else base


ADHOC_SET_NAME = "labels"  # the one label set built from --labels


def adhoc_label_set(
    name: str,
    labels: Sequence[str],
    *,
    templates: Sequence[str] | None = None,
    background: Sequence[str] | None = None,
    mode: ScoringMode | None = None,
    flag: str = "--labels",
) -> LabelSetConfig:
    """A label set built from command-line flags; ConfigError names the flag when invalid."""
    fields: dict[str, Any] = {
        "name": name,
        "labels": list(labels),
        "prompt_template": list(templates or [DEFAULT_PROMPT_TEMPLATE]),
        "background": list(background or []),
    }
    if mode is not None:
        fields["mode"] = mode
    try:
        return LabelSetConfig.model_validate(fields)
    except ValidationError as err:
        first = err.errors()[0]
        what = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{flag}: {what}") from err


def progress(total: int, description: str, unit: str = "win") -> Any:
    """A tqdm bar on stderr, hidden when stderr is not a terminal (logs, pipes, CI)."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        leave=False,
    )


def embed_in_batches(
    embed_audio: Callable[[Sequence[np.ndarray]], np.ndarray],
    windows: Sequence[np.ndarray],
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(len(windows), dim) embeddings, `batch_size` windows per forward pass."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size: must be at least 1 (got {batch_size})")
    return batching.embed_in_batches(
        lambda batch, _positions: embed_audio(batch), windows, batch_size, on_batch=on_batch
    )


def output_dir(path: Path) -> Path:
    """Create a report directory; ConfigError when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {path}: cannot create ({err.strerror})") from err
    return path
