"""The model package at run time: the runner and the onnx backend load without torch.

The static side (no cycle, torch only in the torch modules) is import-linter's contracts in
pyproject.toml, checked by `lint-imports`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_runner_and_the_onnx_backend_imports_no_torch() -> None:
    script = (
        "import sys, monitor.model.runner, monitor.model.onnx_backend; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert proc.stdout.strip() == "[]"
