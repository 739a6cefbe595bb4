"""The openvino backend on the tiny checkpoint: fp32 equal to torch, int8 calibrated and cached
apart, a warm daemon process without torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")  # the export's quantiser

from monitor.config import ModelConfig, parse_config
from monitor.errors import ConfigError
from monitor.model.artefacts import onnx_file_names
from monitor.model.checkpoint import identity_of
from monitor.model.embedcache import EmbeddingCache
from monitor.model.exports import cached_export
from monitor.model.openvino_backend import OpenVinoClapRunner, load_openvino_runner
from monitor.model.runner import load_clap
from monitor.model.trace import export_onnx
from tests.support.audio import model_windows
from tests.support.tiny_clap import LOGIT_SCALE_A, PROJECTION_DIM
from tests.support.warm_start import run_warm_process, warm_window

RATE_HZ = 48000
PROMPTS = ["This is a sound of dog barking.", "This is a sound of glass breaking."]


WINDOWS = model_windows()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture(scope="module")
def openvino_fp32(tiny_clap_dir: Path, cache_dir: Path) -> OpenVinoClapRunner:
    """Cold start: the export and the prompts both go through the torch helper process."""
    cfg = ModelConfig(
        precision="fp32", name=str(tiny_clap_dir), backend="openvino", cache_dir=cache_dir
    )
    runner = load_clap(cfg)
    assert isinstance(runner, OpenVinoClapRunner)
    runner.embed_text(PROMPTS)
    return runner


@pytest.fixture(scope="module")
def torch_fp32(tiny_clap_dir: Path, cache_dir: Path) -> Any:
    return load_clap(ModelConfig(precision="fp32", name=str(tiny_clap_dir), cache_dir=cache_dir))


@pytest.mark.slow
def test_fp32_agrees_with_torch_and_shares_the_onnx_backend_s_export(
    openvino_fp32: OpenVinoClapRunner, torch_fp32: Any, tiny_clap_dir: Path
) -> None:
    assert (openvino_fp32.backend, openvino_fp32.precision) == ("openvino", "fp32")
    assert openvino_fp32.device == "cpu"
    assert openvino_fp32.embedding_dim == PROJECTION_DIM
    assert openvino_fp32.logit_scale == pytest.approx(LOGIT_SCALE_A, rel=1e-6)
    assert openvino_fp32.model_path is not None
    assert openvino_fp32.model_path.name == onnx_file_names("fp32")[0]
    ours = openvino_fp32.embed_audio(WINDOWS)
    reference = torch_fp32.embed_audio(WINDOWS)
    assert ours.shape == (3, PROJECTION_DIM) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert (ours * reference).sum(axis=1).min() > 0.9999
    for i, window in enumerate(WINDOWS):  # one at a time, as the worker mostly sends them
        np.testing.assert_allclose(ours[i], openvino_fp32.embed_audio([window])[0], atol=1e-5)
    np.testing.assert_array_equal(openvino_fp32.embed_text(PROMPTS), torch_fp32.embed_text(PROMPTS))


@pytest.mark.slow
def test_int8_is_a_calibrated_static_export_cached_apart(
    openvino_fp32: OpenVinoClapRunner, tiny_clap_dir: Path, cache_dir: Path
) -> None:
    cfg = ModelConfig(
        name=str(tiny_clap_dir), backend="openvino", precision="int8", cache_dir=cache_dir
    )
    # Exported in this process (torch is here anyway) to keep the test fast; the runner then
    # finds it in the cache like a daemon would.
    path = export_onnx(cfg)
    assert path.name == onnx_file_names("int8-qdq")[0]
    # The onnx backend's int8 (dynamic) is another file: each runtime gets the form it runs.
    assert cached_export(identity_of(cfg), EmbeddingCache.open(cache_dir), "int8") is None
    graph = path.read_bytes()
    assert b"QuantizeLinear" in graph and b"DequantizeLinear" in graph
    runner = load_openvino_runner(cfg)
    assert (runner.precision, runner.model_path) == ("int8", path)
    embeddings = runner.embed_audio(WINDOWS)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    cosines = (embeddings * openvino_fp32.embed_audio(WINDOWS)).sum(axis=1)
    print(f"openvino int8 vs fp32 cosine (tiny random model): {cosines}")
    assert cosines.min() > 0.95
    # Calibrated on the same generated windows every time: the same file again.
    path.unlink()
    assert export_onnx(cfg).read_bytes() == graph


@pytest.mark.slow
def test_warm_daemon_process_never_imports_torch(
    openvino_fp32: OpenVinoClapRunner, tiny_clap_dir: Path, cache_dir: Path
) -> None:
    result, log = run_warm_process(
        tiny_clap_dir, cache_dir, PROMPTS, backend="openvino", precision="fp32", seed=11
    )
    assert result["torch"] is False
    assert result["transformers"] is False
    assert "torch helper" not in log and "exporting" not in log
    expected = openvino_fp32.embed_audio([warm_window(11)])
    np.testing.assert_allclose(result["audio"], expected, atol=1e-6)


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("backend: openvino, precision: bf16", "bf16 is for the torch backend; openvino"),
        ("backend: openvino, device: cuda", "backend openvino runs on the CPU"),
    ],
)
def test_what_openvino_cannot_do_is_a_config_error(model: str, words: str) -> None:
    text = (
        f"model: {{{model}}}\n"
        "source: {type: file, path: x.wav}\nlabel_sets: [{name: a, labels: [x, y]}]\n"
    )
    with pytest.raises(ConfigError, match=words):
        parse_config(text, Path("c.yaml"))
