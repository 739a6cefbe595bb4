"""A deterministic text embedder for tests that need prompts embedded but no model."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

DIM = 16


class HashedEmbedder:
    """Each prompt a fixed random unit vector (seeded by its hash); records every call.

    `fail_on`: a prompt containing it makes the call raise, as a text encoder can.
    """

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, prompts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(prompts))
        if self.fail_on is not None and any(self.fail_on in p for p in prompts):
            raise RuntimeError(f"the text encoder failed on {self.fail_on!r}")
        rows = []
        for prompt in prompts:
            seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "little")
            vector = np.random.default_rng(seed).standard_normal(DIM)
            rows.append(vector / np.linalg.norm(vector))
        return np.asarray(rows, dtype=np.float32).reshape(len(prompts), DIM)
