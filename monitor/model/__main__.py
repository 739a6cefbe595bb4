"""`python -m monitor.model`: the helper process that does the work needing transformers."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monitor.config import ModelConfig
from monitor.errors import ModelError


def main(argv: Sequence[str]) -> int:
    """`python -m monitor.model export|trace|embed-text`: the work that needs transformers, in
    a process of its own, so that the daemon never imports it (nor torch, with onnx)."""
    parser = argparse.ArgumentParser(prog="python -m monitor.model")
    parser.add_argument("command", choices=("export", "trace", "embed-text"))
    parser.add_argument("--config", required=True, help="ModelConfig as JSON")
    parser.add_argument("--result", required=True, type=Path, help="JSON result file")
    parser.add_argument("--out-dir", type=Path, help="export, trace: directory, not the cache")
    parser.add_argument("--prompts", type=Path, help="embed-text: JSON list of prompts")
    parser.add_argument("--embeddings", type=Path, help="embed-text: output .npy")
    args = parser.parse_args(list(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    from monitor.model.torch_backend import embed_prompts
    from monitor.model.trace import Untraceable, build_graph, export_onnx

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    cfg = ModelConfig.model_validate_json(args.config)
    try:
        if args.command == "export":
            path = export_onnx(cfg, args.out_dir)
            result: dict[str, Any] = {"onnx": str(path)}
        elif args.command == "trace":
            try:
                result = {"graph": str(build_graph(cfg, args.out_dir))}
            except Untraceable as err:
                result = {"refused": str(err)}
        else:
            prompts = json.loads(args.prompts.read_text(encoding="utf-8"))
            np.save(args.embeddings, embed_prompts(cfg, prompts))
            result = {"embeddings": str(args.embeddings)}
    except ModelError as err:
        result = {"error": str(err)}
    args.result.write_text(json.dumps(result), encoding="utf-8")
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
