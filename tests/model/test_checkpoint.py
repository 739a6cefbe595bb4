"""Checkpoint resolution against a real (tiny) checkpoint: load errors that say what to do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from monitor.model.tower import read_logit_scale

REPO_ROOT = Path(__file__).resolve().parents[2]


# huggingface_hub reads HF_HUB_OFFLINE and HF_HOME when it is imported, which has already
# happened in this process, so the missing-weights cases run in a fresh interpreter.
_MISSING_WEIGHTS_SCRIPT = """
import json, sys
from monitor.config import ModelConfig
from monitor.errors import ModelError
from monitor.model.runner import load_clap

results = {}
for case, name in json.loads(sys.argv[1]).items():
    try:
        load_clap(ModelConfig(precision="fp32", name=name))
        results[case] = {"error": None}
    except ModelError as err:
        results[case] = {"error": type(err).__name__, "message": str(err)}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def missing_weights(tiny_clap_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("missing-weights")
    hf_home = root / "hf-home"
    hf_home.mkdir()
    config_only = root / "config-only"
    config_only.mkdir()
    shutil.copy(tiny_clap_dir / "config.json", config_only)
    weights_only = root / "weights-only"
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_clap_dir / name, weights_only)
    cases = {
        "hub": "laion/clap-htsat-unfused",
        "missing_dir": str(root / "no-such-dir"),
        "config_only": str(config_only),
        "weights_only": str(weights_only),
    }
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))
    }
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(hf_home), PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", _MISSING_WEIGHTS_SCRIPT, json.dumps(cases)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Retry" not in proc.stderr  # offline means no network attempts at all
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_one_line_model_error(result: dict[str, Any], name: str) -> str:
    assert result["error"] == "ModelError"
    message: str = result["message"]
    assert "\n" not in message
    assert message.startswith(f"cannot load CLAP model {name!r}:")
    return message


def test_uncached_hub_id_offline_says_how_to_provide_weights(missing_weights: Any) -> None:
    message = _assert_one_line_model_error(missing_weights["hub"], "laion/clap-htsat-unfused")
    assert "not available offline" in message
    assert "hf download laion/clap-htsat-unfused" in message
    assert "local directory" in message
    assert "HF_HUB_OFFLINE" in message


def test_missing_local_directory(missing_weights: Any) -> None:
    result = missing_weights["missing_dir"]
    assert result["error"] == "ModelError"
    assert "\n" not in result["message"]
    assert "no such directory" in result["message"]
    assert "--local-dir" in result["message"]


def test_directory_without_weights(missing_weights: Any) -> None:
    result = missing_weights["config_only"]
    assert result["error"] == "ModelError"
    assert "\n" not in result["message"]
    assert "incomplete" in result["message"]
    assert "model.safetensors" in result["message"]


def test_directory_without_processor_files(missing_weights: Any) -> None:
    result = missing_weights["weights_only"]
    assert result["error"] == "ModelError"
    assert "\n" not in result["message"]
    assert "incomplete" in result["message"]


def test_logit_scale_is_read_from_the_weights_file(tiny_clap_dir: Path) -> None:
    from transformers import ClapModel

    full: Any = ClapModel.from_pretrained(str(tiny_clap_dir))
    assert read_logit_scale(tiny_clap_dir) == float(full.logit_scale_a.detach().exp())
