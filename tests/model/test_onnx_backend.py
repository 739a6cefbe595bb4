"""The onnx backend against the torch backend on the tiny checkpoint, and its torch-free daemon."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from monitor.config import LabelSetConfig, ModelConfig, parse_config
from monitor.errors import ConfigError, ModelError
from monitor.model.artefacts import onnx_file_names
from monitor.model.checkpoint import identity_of
from monitor.model.embedcache import EmbeddingCache
from monitor.model.exports import cached_export
from monitor.model.features import StreamingMel
from monitor.model.onnx_backend import OnnxClapRunner, load_onnx_runner
from monitor.model.runner import load_clap
from monitor.model.trace import export_onnx
from monitor.pipeline.scoring import LabelSetScorer
from tests.support.audio import model_windows
from tests.support.streams import stream_windows
from tests.support.tiny_clap import LOGIT_SCALE_A, PROJECTION_DIM
from tests.support.warm_start import run_warm_process, warm_window

RATE_HZ = 48000
LABELS = ["dog barking", "glass breaking", "smoke alarm", "doorbell"]
PROMPTS = [f"This is a sound of {label}." for label in LABELS]


WINDOWS = model_windows()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_fp32(tiny_clap_dir: Path, cache_dir: Path) -> OnnxClapRunner:
    """Cold start: the export and the prompts both go through the torch helper process."""
    runner = load_clap(
        ModelConfig(precision="fp32", name=str(tiny_clap_dir), backend="onnx", cache_dir=cache_dir)
    )
    assert isinstance(runner, OnnxClapRunner)
    runner.embed_text(PROMPTS)
    return runner


@pytest.fixture(scope="module")
def torch_fp32(tiny_clap_dir: Path, cache_dir: Path) -> Any:
    return load_clap(ModelConfig(precision="fp32", name=str(tiny_clap_dir), cache_dir=cache_dir))


def _scores(runner: Any, windows: list[np.ndarray]) -> np.ndarray:
    label_set = LabelSetConfig(name="test", labels=LABELS)  # type: ignore[arg-type]
    scorer = LabelSetScorer.build(label_set, runner.embed_text, runner.logit_scale)
    return scorer.score(runner.embed_audio(windows))


def test_onnx_runner_reports_the_checkpoint(onnx_fp32: OnnxClapRunner, tiny_clap_dir: Path) -> None:
    assert onnx_fp32.model_id == str(tiny_clap_dir)
    assert onnx_fp32.sample_rate_hz == 48000
    assert onnx_fp32.max_samples == 480000
    assert onnx_fp32.embedding_dim == PROJECTION_DIM
    assert onnx_fp32.logit_scale == pytest.approx(LOGIT_SCALE_A, rel=1e-6)
    assert onnx_fp32.precision == "fp32"


def test_onnx_fp32_agrees_with_torch(onnx_fp32: OnnxClapRunner, torch_fp32: Any) -> None:
    ours = onnx_fp32.embed_audio(WINDOWS)
    reference = torch_fp32.embed_audio(WINDOWS)
    assert ours.shape == (3, PROJECTION_DIM) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosines = (ours * reference).sum(axis=1)
    print(f"onnx fp32 vs torch fp32 cosine: {cosines}")
    assert cosines.min() > 0.9999
    np.testing.assert_allclose(_scores(onnx_fp32, WINDOWS), _scores(torch_fp32, WINDOWS), atol=1e-4)
    # The prompts were embedded by the same torch code in the helper: identical rows.
    np.testing.assert_array_equal(onnx_fp32.embed_text(PROMPTS), torch_fp32.embed_text(PROMPTS))


def test_batches_and_empty_input(onnx_fp32: OnnxClapRunner) -> None:
    batched = onnx_fp32.embed_audio(WINDOWS)
    for i, window in enumerate(WINDOWS):
        np.testing.assert_allclose(batched[i], onnx_fp32.embed_audio([window])[0], atol=1e-5)
    assert onnx_fp32.embed_audio([]).shape == (0, PROJECTION_DIM)
    assert onnx_fp32.embed_text([]).shape == (0, PROJECTION_DIM)
    with pytest.raises(ValueError, match="longer than"):
        onnx_fp32.embed_audio([np.zeros(480001, dtype=np.float32)])


def test_stream_positions_share_frames_and_change_no_embedding(
    onnx_fp32: OnnxClapRunner,
) -> None:
    windows = stream_windows(16000, 13.0)
    samples = [w.samples for w in windows]
    positions = [w.model_start_index for w in windows]
    assert positions == [0, 48000, 96000, 144000]
    features = onnx_fp32._features
    assert isinstance(features, StreamingMel)
    reused = features.frames_reused
    # One window per call, as the worker sends them: the reuse crosses calls.
    streamed = np.concatenate(
        [onnx_fp32.embed_audio([w], [p]) for w, p in zip(samples, positions, strict=True)]
    )
    assert features.frames_reused > reused
    np.testing.assert_allclose(streamed, onnx_fp32.embed_audio(samples), rtol=0, atol=1e-5)


def test_int8_runs_and_is_cached_apart(
    onnx_fp32: OnnxClapRunner, tiny_clap_dir: Path, cache_dir: Path
) -> None:
    cfg = ModelConfig(
        name=str(tiny_clap_dir), backend="onnx", precision="int8", cache_dir=cache_dir
    )
    # Exported in this process (torch is here anyway) to keep the test fast; the runner then
    # finds it in the cache like a daemon would.
    int8_path = export_onnx(cfg)
    runner = load_onnx_runner(cfg)
    assert runner.precision == "int8"
    assert runner.model_path == int8_path
    assert onnx_fp32.model_path is not None and int8_path != onnx_fp32.model_path
    assert int8_path.name == onnx_file_names("int8")[0]
    assert int8_path.read_bytes() != onnx_fp32.model_path.read_bytes()
    found = cached_export(identity_of(cfg), EmbeddingCache.open(cache_dir), cfg.precision)
    assert found is not None and found[1]["precision"] == "int8"
    embeddings = runner.embed_audio(WINDOWS)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    cosines = (embeddings * onnx_fp32.embed_audio(WINDOWS)).sum(axis=1)
    print(f"onnx int8 vs fp32 cosine: {cosines}")
    assert cosines.min() > 0.99


def test_warm_daemon_process_never_imports_torch(
    onnx_fp32: OnnxClapRunner, tiny_clap_dir: Path, cache_dir: Path
) -> None:
    result, log = run_warm_process(
        tiny_clap_dir, cache_dir, PROMPTS, backend="onnx", precision="fp32", seed=11
    )
    assert result["torch"] is False
    assert result["transformers"] is False
    assert "torch helper" not in log  # nothing was exported or embedded again
    assert "exporting" not in log
    np.testing.assert_allclose(result["text"], onnx_fp32.embed_text(PROMPTS), atol=1e-7)
    expected = onnx_fp32.embed_audio([warm_window(11)])
    np.testing.assert_allclose(result["audio"], expected, atol=1e-6)


def test_bf16_is_a_config_error(tiny_clap_dir: Path, cache_dir: Path) -> None:
    text = (
        f"model: {{name: {tiny_clap_dir}, backend: onnx, precision: bf16}}\n"
        "source: {type: file, path: x.wav}\nlabel_sets: [{name: a, labels: [x, y]}]\n"
    )
    with pytest.raises(ConfigError, match="model: precision bf16 is for the torch backend"):
        parse_config(text, Path("c.yaml"))
    # load_clap keeps its own guard for configs built in code without validation.
    cfg = ModelConfig.model_construct(
        name=str(tiny_clap_dir), backend="onnx", precision="bf16", cache_dir=cache_dir
    )
    with pytest.raises(ConfigError, match="bf16"):
        load_clap(cfg)


def test_missing_directory_fails_at_once(tmp_path: Path) -> None:
    cfg = ModelConfig(
        precision="fp32", name=str(tmp_path / "nope"), backend="onnx", cache_dir=tmp_path / "cache"
    )
    with pytest.raises(ModelError, match="no such directory"):
        load_clap(cfg)


def test_helper_failure_is_one_model_error_line(tiny_clap_dir: Path, tmp_path: Path) -> None:
    incomplete = tmp_path / "config-only"
    incomplete.mkdir()
    shutil.copy(tiny_clap_dir / "config.json", incomplete)
    cfg = ModelConfig(
        precision="fp32", name=str(incomplete), backend="onnx", cache_dir=tmp_path / "cache"
    )
    with pytest.raises(ModelError) as caught:
        load_clap(cfg)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cannot load CLAP model {str(incomplete)!r}:")
    assert "incomplete" in message
