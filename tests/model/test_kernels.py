"""The audio tower's faster kernels give the eager tower's embeddings (tiny checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.mark.parametrize("batch", [1, 3])
def test_fused_window_attention_equals_the_eager_one(tiny_clap_dir: Path, batch: int) -> None:
    import torch
    from transformers import ClapAudioModelWithProjection

    from monitor.model.kernels import fuse_window_attention

    eager: Any = ClapAudioModelWithProjection.from_pretrained(str(tiny_clap_dir)).eval()
    fused: Any = ClapAudioModelWithProjection.from_pretrained(str(tiny_clap_dir)).eval()
    blocks = sum(eager.config.depths)
    assert blocks >= 4  # shifted windows (every second block) are exercised
    assert fuse_window_attention(fused) == blocks
    torch.manual_seed(1)
    features = torch.randn(batch, 1, 1001, 64) * 20.0 - 40.0
    with torch.inference_mode():
        expected = eager(input_features=features).audio_embeds
        got = fused(input_features=features).audio_embeds
        # A window's result must not depend on the others in its batch.
        alone = fused(input_features=features[-1:]).audio_embeds
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone[0], got[-1], atol=1e-5, rtol=1e-5)
    # The second and third passes reused the shifted layers' combined masks.
    assert sum(getattr(m, "fused_mask", None) is not None for m in fused.modules()) == blocks // 2
    # The comparison has teeth: misplaced position biases move the embedding far beyond 1e-5.
    for module in fused.modules():
        if hasattr(module, "fused_position_bias"):
            module.fused_position_bias = module.fused_position_bias.flip(-1)
    with torch.inference_mode():
        broken = fused(input_features=features).audio_embeds
    assert (broken - expected).abs().max() > 1e-3
