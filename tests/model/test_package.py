"""The model package's imports: no cycle, and the onnx backend and runner free of torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "monitor" / "model"
TORCH_MODULES = {"torch_backend", "trace", "kernels", "tower"}


def _imports() -> dict[str, set[str]]:
    """Module -> the monitor.model modules it imports anywhere (at the top or in a function)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "monitor.model":
                    found.update(alias.name for alias in node.names)
                elif node.module.startswith("monitor.model."):
                    found.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                found.update(
                    alias.name.split(".")[2]
                    for alias in node.names
                    if alias.name.startswith("monitor.model.")
                )
        graph[path.stem] = found - {path.stem}
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return seen


def test_no_module_of_the_package_imports_itself_back() -> None:
    graph = _imports()
    assert {"runner", "torch_backend", "onnx_backend", "trace"} <= set(graph)
    cycles = sorted(m for m in graph if m in _reachable(graph, m))
    assert cycles == []


@pytest.mark.parametrize("module", ["onnx_backend", "artefacts", "checkpoint", "batching"])
def test_the_torch_free_modules_reach_no_torch_module(module: str) -> None:
    assert _reachable(_imports(), module) & TORCH_MODULES == set()


def test_importing_the_runner_and_the_onnx_backend_imports_no_torch() -> None:
    script = (
        "import sys, monitor.model.runner, monitor.model.onnx_backend; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PACKAGE.parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert proc.stdout.strip() == "[]"
