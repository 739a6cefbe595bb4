"""A daemon-like process started on a warm cache: what it imported and what it computed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.processes import run_python

_SCRIPT = """
import json, logging, sys
import numpy as np
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from monitor.config import ModelConfig
from monitor.model.runner import load_clap

name, cache_dir, prompts, backend, precision, seed = sys.argv[1:7]
cfg = ModelConfig(name=name, cache_dir=cache_dir, backend=backend, precision=precision)
runner = load_clap(cfg)
text = runner.embed_text(json.loads(prompts))
rng = np.random.default_rng(int(seed))
audio = runner.embed_audio([(0.1 * rng.standard_normal(48000)).astype(np.float32)])
print(json.dumps({
    "torch": "torch" in sys.modules,
    "transformers": "transformers" in sys.modules,
    "text": text.tolist(),
    "audio": audio.tolist(),
}))
"""


def warm_window(seed: int) -> np.ndarray:
    """The one-second window the warm process embeds."""
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(48000)).astype(np.float32)


def run_warm_process(
    checkpoint: Path,
    cache_dir: Path,
    prompts: list[str],
    *,
    backend: str,
    precision: str,
    seed: int,
) -> tuple[dict[str, Any], str]:
    """Load the model in a fresh interpreter, embed `prompts` and warm_window(seed); returns
    (what it imported and computed, its log)."""
    argv = [str(checkpoint), str(cache_dir), json.dumps(prompts), backend, precision, str(seed)]
    proc = run_python(_SCRIPT, *argv)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result, proc.stderr
