"""How close a figure is to the machine's limit: the tower's GFLOP per window, a sgemm peak."""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SGEMM_SIZE = 2048
SGEMM_REPEATS = 5


def tower_gflop(pipe: Any, window_48k: np.ndarray) -> float | None:
    """Floating-point operations of one window through the audio tower, in GFLOP (a
    multiply-add counts 2), counted by torch on the reference model; None if it cannot."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        inputs = pipe.feature_extractor(
            [window_48k], sampling_rate=pipe.feature_extractor.sampling_rate, return_tensors="pt"
        )
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            pipe.model.get_audio_features(**inputs)
        return float(counter.get_total_flops()) / 1e9
    except Exception as err:  # a count is a nice-to-have; the timings stand without it
        logger.warning("could not count the audio tower's FLOPs: %s", err)
        return None


def sgemm_peak_gflops(size: int = SGEMM_SIZE, repeats: int = SGEMM_REPEATS) -> float:
    """The median GFLOP/s of a square fp32 matrix product through torch, with the threads
    torch uses now: about the most the tower's matrix products can reach here."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)  # warm-up: thread pool and kernel selection
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        seconds.append(time.perf_counter() - started)
    return 2.0 * size**3 / statistics.median(seconds) / 1e9
