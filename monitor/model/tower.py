"""The transformers audio tower: loaded, in a precision, with faster kernels, as embeddings."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from monitor.config import ModelConfig
from monitor.errors import ModelError
from monitor.model.checkpoint import (
    check_complete,
    checkpoint_dir,
    load_error_message,
    revision_of,
)
from monitor.model.features import MelSettings
from monitor.model.kernels import fuse_window_attention, linear_through_onednn

logger = logging.getLogger(__name__)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers below errors: the load report lists every weight of the other
    tower as unexpected, which is exactly what loading one tower means."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def load_audio_tower(cfg: ModelConfig, source: str) -> tuple[Any, Any]:
    """(ClapAudioModelWithProjection in eval mode, ClapFeatureExtractor) of the checkpoint."""
    import torch
    from transformers import ClapAudioModelWithProjection, ClapFeatureExtractor

    revision = revision_of(cfg)
    try:
        with quiet_transformers():
            # The weights first: their loader's errors tell "offline" from "no such repo".
            loaded: Any = ClapAudioModelWithProjection.from_pretrained(
                source, revision=revision, dtype=torch.float32, output_loading_info=True
            )
            extractor: Any = ClapFeatureExtractor.from_pretrained(source, revision=revision)
        model, info = loaded
    except Exception as err:
        raise ModelError(load_error_message(cfg, source, err)) from err
    check_complete(cfg, "audio", info)
    model.eval()
    return model, extractor


def with_precision(model: Any, precision: str) -> Any:
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


def prepared_tower(cfg: ModelConfig, source: str) -> tuple[Any, Any, Path]:
    """(the audio tower in cfg.precision, with the fast CPU kernels or on cfg.device cuda, its
    extractor, checkpoint dir)."""
    model, extractor = load_audio_tower(cfg, source)
    directory = checkpoint_dir(cfg, source)
    model = with_precision(model, cfg.precision)
    if cfg.device == "cuda":
        # The fused attention and oneDNN kernels below are CPU rewrites; on a GPU the
        # transformers model runs as it is.
        return model.to("cuda"), extractor, directory
    fuse_window_attention(model)
    if cfg.precision == "fp32":
        linear_through_onednn(model)
    return model, extractor, directory


def normalised_tower(model: Any) -> Any:
    """The tower to run, trace or export: features in, L2-normalised float32 embeddings out."""
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


def mel_settings(extractor: Any) -> MelSettings | None:
    """The extractor's settings for the monitor's own features; None if only the extractor
    can compute them (the fusion architecture's stacked crops)."""
    try:
        return MelSettings.from_extractor(extractor.to_dict())
    except ValueError as err:
        logger.info("features by the checkpoint's own extractor: %s", err)
        return None


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


def logit_scale(cfg: ModelConfig, directory: Path) -> float:
    """read_logit_scale, or ModelError saying the checkpoint is not a CLAP one."""
    try:
        return read_logit_scale(directory)
    except (KeyError, OSError, ValueError) as err:
        raise ModelError(
            f"cannot load CLAP model {cfg.name!r}: no logit_scale_a in its weights ({err!r}); "
            "is it a CLAP checkpoint?"
        ) from err
