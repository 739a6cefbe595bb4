"""Faster kernels patched into the audio tower: fused window attention, oneDNN Linear."""

from __future__ import annotations

import functools
import logging
from typing import Any

logger = logging.getLogger(__name__)


def _window_attention(
    self: Any,
    hidden_states: Any,
    attention_mask: Any = None,
    output_attentions: bool | None = False,
) -> Any:
    """ClapAudioSelfAttention.forward in one scaled_dot_product_attention call.

    The eager version runs two batched matmuls over thousands of 64-token windows, which cost
    as much as all the tower's Linear layers together on a small CPU; the fused kernel gives
    the same result (to float rounding) much faster. It never returns attention probabilities
    (output_attentions), which the monitor does not ask for.
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


def fuse_window_attention(model: Any) -> int:
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

    torch's own fp32 Linear calls MKL, which on AMD CPUs takes a generic code path, far
    slower than oneDNN for the tower's shapes. The op is registered from Python because its
    oneDNN entry point takes an argument type (Scalar?[]) that TorchScript cannot record.
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


def linear_through_onednn(model: Any) -> int:
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
