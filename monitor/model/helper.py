"""Torch work in a helper process (`python -m monitor.model`), so a daemon never imports it.

Both compiled backends use it: the onnx backend for its export, the torch backend for its
TorchScript graph, and both for label embeddings missing from the cache. The helper exits
when done, so the daemon's memory holds the audio tower and nothing of transformers.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monitor.config import ModelConfig
from monitor.errors import ModelError

logger = logging.getLogger(__name__)

# A first export of the full-size tower is slow even on a desktop CPU; give a slow
# single-board computer plenty more before calling it hung.
HELPER_TIMEOUT_SECONDS = 3600.0
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_torch_helper(
    command: str,
    cfg: ModelConfig,
    work: Path,
    *extra: str,
    purpose: str = "for ONNX Runtime",
    timeout_seconds: float | None = None,
) -> dict[str, Any]:
    """Run `python -m monitor.model <command>` and return its JSON result; ModelError if it
    reports one or fails. The helper is killed if this thread is interrupted (stop signal)."""
    result_path = work / "result.json"
    argv = [
        sys.executable,
        "-m",
        "monitor.model",
        command,
        "--config",
        cfg.model_dump_json(),
    ]
    argv += ["--result", str(result_path), *extra]
    env = dict(os.environ)
    # The helper must import this very package, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    timeout = HELPER_TIMEOUT_SECONDS if timeout_seconds is None else timeout_seconds
    head = f"cannot prepare CLAP model {cfg.name!r} {purpose}"
    try:
        proc = subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise ModelError(f"{head}: the torch helper ({command}) took over {timeout:g} s") from err
    except OSError as err:
        raise ModelError(f"{head}: cannot start the torch helper ({err})") from err
    for line in proc.stderr.splitlines():
        logger.debug("torch helper: %s", line)
    try:
        result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        raise ModelError(f"{head}: the torch helper ({command}) failed: {last}") from None
    if "error" in result:
        raise ModelError(str(result["error"]))
    return result


class HelperTextEncoder:
    """Prompts embedded by the checkpoint's text tower in the torch helper process."""

    def __init__(self, cfg: ModelConfig) -> None:
        self._cfg = cfg

    def __call__(self, prompts: Sequence[str]) -> np.ndarray:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="audio-monitor-text-") as name:
            work = Path(name)
            (work / "prompts.json").write_text(json.dumps(list(prompts)), encoding="utf-8")
            out = work / "embeddings.npy"
            run_torch_helper(
                "embed-text",
                self._cfg,
                work,
                "--prompts",
                str(work / "prompts.json"),
                "--embeddings",
                str(out),
                purpose="to embed prompts",
            )
            embeddings = np.load(out, allow_pickle=False)
        logger.info(
            "embedded %d prompt(s) in the torch helper process (%.1f s)",
            len(prompts),
            time.monotonic() - started,
        )
        return np.asarray(embeddings, dtype=np.float32)
