"""Tracing and export: faithful graphs are made, unfaithful ones refused (tiny checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitor.config import ModelConfig
from monitor.model.trace import Untraceable, build_graph


def test_export_stretch_as_matmul_equals_the_bicubic_resize(tiny_clap_dir: Path) -> None:
    import torch
    from transformers import ClapAudioModelWithProjection

    from monitor.model.trace import _interpolation_as_matmul

    resized: Any = ClapAudioModelWithProjection.from_pretrained(str(tiny_clap_dir)).eval()
    multiplied: Any = ClapAudioModelWithProjection.from_pretrained(str(tiny_clap_dir)).eval()
    _interpolation_as_matmul(multiplied, 1001)
    torch.manual_seed(2)
    features = torch.randn(2, 1, 1001, 64) * 20.0 - 40.0
    encoder = multiplied.audio_model.audio_encoder
    with torch.inference_mode():
        stretched = encoder.reshape_mel2img(features)
        expected_image = resized.audio_model.audio_encoder.reshape_mel2img(features)
        expected = resized(input_features=features).audio_embeds
        got = multiplied(input_features=features).audio_embeds
    torch.testing.assert_close(stretched, expected_image, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_a_graph_that_disagrees_is_refused(
    tiny_clap_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import monitor.model.trace

    # No graph can be that close: the check must refuse it.
    monkeypatch.setattr(monitor.model.trace, "TRACE_TOLERANCE", -1.0)
    with pytest.raises(Untraceable, match="traced graph differs"):
        build_graph(ModelConfig(precision="fp32", name=str(tiny_clap_dir)), tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written for a daemon to find


def test_a_tower_that_cannot_be_traced_is_refused(
    tiny_clap_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("tracer unavailable")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    with pytest.raises(Untraceable, match="tracing it failed: tracer unavailable"):
        build_graph(ModelConfig(precision="fp32", name=str(tiny_clap_dir)), tmp_path)
