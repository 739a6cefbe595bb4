"""The torch backend against a real (tiny) checkpoint and the transformers zero-shot pipeline."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.config import LabelSetConfig, ModelConfig
from monitor.model.artefacts import graph_file_names
from monitor.model.features import StreamingMel
from monitor.model.runner import ClapRunner, load_clap
from monitor.model.torch_backend import TorchClapRunner
from monitor.pipeline.scoring import LabelSetScorer
from tests.support.audio import tone
from tests.support.streams import stream_windows
from tests.support.tiny_clap import LOGIT_SCALE_A, LOGIT_SCALE_T, PROJECTION_DIM
from tests.support.warm_start import run_warm_process, warm_window

RATE_HZ = 48000


def _noise(seconds: float, seed: int, amplitude: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal(round(seconds * RATE_HZ))).astype(np.float32)


def _chirp(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE_HZ)) / RATE_HZ
    sweep = 0.3 * np.sin(2 * np.pi * (100 * t + 600 * t**2))  # 100 Hz rising to ~12 kHz
    chirp: np.ndarray = (sweep + _noise(seconds, seed=7, amplitude=0.02)).astype(np.float32)
    return chirp


WINDOWS = {
    "noise_1s": _noise(1.0, seed=1),
    "tone_1khz_5s": tone(5.0, 1000.0),
    "tone_300hz_3.3s": tone(3.3, 300.0),  # not a divisor of 10 s: repeat plus zero padding
    "chirp_10s": _chirp(10.0),  # exactly the model's maximum, no padding, no crop
}


LABEL_LISTS = {
    "two": ["dog barking", "glass breaking"],
    "five": ["dog barking", "cat meowing", "smoke alarm", "baby crying", "knock on the door"],
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def runner(tiny_clap_dir: Path, cache_dir: Path) -> ClapRunner:
    return load_clap(ModelConfig(precision="fp32", name=str(tiny_clap_dir), cache_dir=cache_dir))


@pytest.fixture(scope="module")
def zero_shot_pipeline(tiny_clap_dir: Path) -> Any:
    from transformers import pipeline

    return pipeline("zero-shot-audio-classification", model=str(tiny_clap_dir))


def _scorer(runner: ClapRunner, labels: list[str]) -> LabelSetScorer:
    label_set = LabelSetConfig(name="test", labels=labels)  # type: ignore[arg-type]
    return LabelSetScorer.build(label_set, runner.embed_text, runner.logit_scale)


def test_load_reports_the_checkpoint(runner: ClapRunner, tiny_clap_dir: Path) -> None:
    assert runner.model_id == str(tiny_clap_dir)
    assert runner.sample_rate_hz == 48000
    assert runner.max_samples == 480000
    assert runner.embedding_dim == PROJECTION_DIM
    # logit_scale_a (audio->text), not logit_scale_t, is what the zero-shot pipeline applies.
    assert runner.logit_scale == pytest.approx(LOGIT_SCALE_A, rel=1e-6)
    assert runner.logit_scale != pytest.approx(LOGIT_SCALE_T)


def test_text_embeddings_are_unit_rows(runner: ClapRunner) -> None:
    prompts = ["This is a sound of dog barking.", "This is a sound of rain.", "ünïcødé ☃ 🔔"]
    embeddings = runner.embed_text(prompts)
    assert embeddings.shape == (3, PROJECTION_DIM)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(embeddings[0], embeddings[1], atol=1e-3)
    # Padding to the longest prompt must not change a prompt's embedding (attention mask works).
    np.testing.assert_allclose(runner.embed_text(prompts[:1])[0], embeddings[0], atol=1e-5)


def test_audio_embeddings_are_unit_rows(runner: ClapRunner) -> None:
    windows = list(WINDOWS.values())
    embeddings = runner.embed_audio(windows)
    assert embeddings.shape == (len(windows), PROJECTION_DIM)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(embeddings[0], embeddings[3], atol=1e-3)


def test_empty_batches_give_empty_arrays(runner: ClapRunner) -> None:
    assert runner.embed_audio([]).shape == (0, PROJECTION_DIM)
    assert runner.embed_text([]).shape == (0, PROJECTION_DIM)


def test_a_batch_equals_each_window_alone(runner: ClapRunner) -> None:
    windows = [WINDOWS["noise_1s"], WINDOWS["tone_1khz_5s"], WINDOWS["chirp_10s"]]
    batched = runner.embed_audio(windows)
    for i, window in enumerate(windows):
        np.testing.assert_allclose(batched[i], runner.embed_audio([window])[0], atol=1e-5)


def test_embeddings_are_deterministic(runner: ClapRunner) -> None:
    windows = [WINDOWS["chirp_10s"], WINDOWS["noise_1s"]]
    first = runner.embed_audio(windows)
    np.testing.assert_allclose(runner.embed_audio(windows), first, atol=1e-6)
    text = runner.embed_text(["This is a sound of siren."])
    np.testing.assert_allclose(runner.embed_text(["This is a sound of siren."]), text, atol=1e-6)


def test_stream_positions_share_frames_and_change_no_embedding(
    tiny_clap_dir: Path, cache_dir: Path
) -> None:
    # max_batch 2: the positions must follow their windows into each forward pass.
    runner = load_clap(
        ModelConfig(precision="fp32", name=str(tiny_clap_dir), cache_dir=cache_dir, max_batch=2)
    )
    assert isinstance(runner, TorchClapRunner)
    windows = stream_windows(44100, 14.0)
    del windows[2]  # a skipped window
    samples = [w.samples for w in windows]
    positions = [w.model_start_index for w in windows]
    assert positions == [0, 48000, 144000, 192000]
    features = runner._features
    assert isinstance(features, StreamingMel)
    streamed = np.concatenate(
        [
            runner.embed_audio(samples[:3], positions[:3]),
            runner.embed_audio(samples[3:], positions[3:]),
        ]
    )
    assert features.frames_reused > 0
    np.testing.assert_allclose(streamed, runner.embed_audio(samples), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="3 positions for 4 windows"):
        runner.embed_audio(samples, positions[:3])


@pytest.mark.parametrize("labels_name", sorted(LABEL_LISTS))
@pytest.mark.parametrize("window_name", sorted(WINDOWS))
def test_scores_equal_the_transformers_pipeline(
    runner: ClapRunner, zero_shot_pipeline: Any, window_name: str, labels_name: str
) -> None:
    window = WINDOWS[window_name]
    labels = LABEL_LISTS[labels_name]
    ours = _scorer(runner, labels).score(runner.embed_audio([window]))[0]

    results = zero_shot_pipeline(
        window, candidate_labels=labels, hypothesis_template="This is a sound of {}."
    )
    theirs = {result["label"]: result["score"] for result in results}

    assert sorted(theirs) == sorted(labels)
    np.testing.assert_allclose(ours, [theirs[label] for label in labels], atol=1e-5)
    # Near-uniform scores would make the comparison above meaningless.
    assert float(ours.max() - ours.min()) > 0.01


def test_batched_scores_equal_the_pipeline(runner: ClapRunner, zero_shot_pipeline: Any) -> None:
    labels = LABEL_LISTS["five"]
    windows = list(WINDOWS.values())
    scores = _scorer(runner, labels).score(runner.embed_audio(windows))
    assert scores.shape == (len(windows), len(labels))
    for row, window in zip(scores, windows, strict=True):
        results = zero_shot_pipeline(window, candidate_labels=labels)
        theirs = {result["label"]: result["score"] for result in results}
        np.testing.assert_allclose(row, [theirs[label] for label in labels], atol=1e-5)


def test_window_longer_than_ten_seconds_is_refused(runner: ClapRunner) -> None:
    too_long = _noise(10.0, seed=3)
    too_long = np.concatenate([too_long, too_long[:1]])
    with pytest.raises(ValueError, match="longer than"):
        runner.embed_audio([WINDOWS["noise_1s"], too_long])


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (np.zeros((2, 4800), dtype=np.float32), "mono"),
        (np.zeros(0, dtype=np.float32), "no samples"),
        (np.full(4800, np.nan, dtype=np.float32), "NaN"),
    ],
    ids=["stereo", "empty", "nan"],
)
def test_unusable_windows_are_refused(runner: ClapRunner, window: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        runner.embed_audio([window])


def test_audio_can_be_embedded_from_a_worker_thread(runner: ClapRunner) -> None:
    windows = [WINDOWS["tone_1khz_5s"], WINDOWS["noise_1s"]]
    expected = runner.embed_audio(windows)
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["embeddings"] = runner.embed_audio(windows)
        except BaseException as err:
            result["error"] = err

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert "error" not in result, result.get("error")
    np.testing.assert_allclose(result["embeddings"], expected, atol=1e-6)


def test_torch_threads_is_applied(tiny_clap_dir: Path) -> None:
    import torch

    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    seen_in_worker: list[int] = []
    try:
        load_clap(ModelConfig(precision="fp32", name=str(tiny_clap_dir), torch_threads=wanted))
        assert torch.get_num_threads() == wanted
        # The worker thread that runs inference must see the setting too, not only the loader.
        worker = threading.Thread(target=lambda: seen_in_worker.append(torch.get_num_threads()))
        worker.start()
        worker.join(timeout=60)
        assert seen_in_worker == [wanted]
        load_clap(ModelConfig(precision="fp32", name=str(tiny_clap_dir), torch_threads=0))
        assert torch.get_num_threads() == wanted  # 0 leaves torch's setting alone
    finally:
        torch.set_num_threads(before)


# --- The fast path: audio tower only, cached label embeddings, precisions --------------------


def test_the_daemon_runner_holds_a_cached_graph_and_no_model(
    runner: ClapRunner, tiny_clap_dir: Path, cache_dir: Path
) -> None:
    assert isinstance(runner, TorchClapRunner)
    assert runner.traced
    assert runner._model is None  # neither tower of transformers' model, only the graph
    assert list((cache_dir / "models").glob(f"*/{graph_file_names('fp32')[0]}"))


def test_the_eager_runner_holds_the_audio_tower_only(tiny_clap_dir: Path, cache_dir: Path) -> None:
    from transformers import ClapAudioModelWithProjection

    eager = load_clap(
        ModelConfig(precision="fp32", name=str(tiny_clap_dir), cache_dir=cache_dir, trace=False)
    )
    assert isinstance(eager, TorchClapRunner)
    assert not eager.traced
    assert isinstance(eager._model, ClapAudioModelWithProjection)
    assert not hasattr(eager._model, "text_model")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_warm_daemon_process_never_imports_transformers(
    tiny_clap_dir: Path, cache_dir: Path, precision: str
) -> None:
    prompts = ["This is a sound of kettle.", "This is a sound of door."]
    cfg = ModelConfig(name=str(tiny_clap_dir), cache_dir=cache_dir, precision=precision)
    first = load_clap(cfg)  # traces, or finds the graph, and embeds the prompts once
    expected_text = first.embed_text(prompts)
    result, log = run_warm_process(
        tiny_clap_dir, cache_dir, prompts, backend="torch", precision=precision, seed=5
    )
    assert result["transformers"] is False
    assert "TorchScript graph" in log
    assert "torch helper" not in log  # nothing traced or embedded again
    np.testing.assert_allclose(result["text"], expected_text, atol=1e-7)
    expected_audio = first.embed_audio([warm_window(5)])
    np.testing.assert_allclose(result["audio"], expected_audio, atol=1e-6)


def test_embeddings_equal_the_reference_feature_extractor(
    runner: ClapRunner, tiny_clap_dir: Path
) -> None:
    import torch
    from transformers import ClapModel, ClapProcessor

    model: Any = ClapModel.from_pretrained(str(tiny_clap_dir))
    model.eval()
    processor: Any = ClapProcessor.from_pretrained(str(tiny_clap_dir))
    windows = list(WINDOWS.values())
    inputs = processor.feature_extractor(windows, sampling_rate=RATE_HZ, return_tensors="pt")
    with torch.inference_mode():
        reference = model.get_audio_features(**inputs).pooler_output.numpy()
    ours = runner.embed_audio(windows)
    cosines = (ours * reference).sum(axis=1)
    print(f"torch features vs ClapFeatureExtractor: embedding cosines {cosines}")
    assert float(np.abs(1.0 - cosines).max()) < 1e-5
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_label_embeddings_come_from_the_cache(
    runner: ClapRunner, tiny_clap_dir: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prompts = ["This is a sound of doorbell.", "This is a sound of car horn."]
    first = runner.embed_text(prompts)
    assert list((cache_dir / "text").glob("*.npz"))
    with caplog.at_level(logging.INFO, logger="monitor"):
        later = load_clap(
            ModelConfig(precision="fp32", name=str(tiny_clap_dir), cache_dir=cache_dir)
        )
        again = later.embed_text(prompts)
    np.testing.assert_array_equal(again, first)
    messages = [r.getMessage() for r in caplog.records]
    assert any("TorchScript graph" in m for m in messages)  # the records were captured
    assert not any("not in the cache" in m or "text tower" in m for m in messages)


def test_text_tower_is_loaded_on_a_miss_and_dropped_when_scoring_starts(
    tiny_clap_dir: Path, tmp_path: Path
) -> None:
    # The eager runner loads the text tower in its own process (the graph runner never does).
    fresh = load_clap(
        ModelConfig(precision="fp32", name=str(tiny_clap_dir), cache_dir=tmp_path, trace=False)
    )
    assert isinstance(fresh, TorchClapRunner)
    assert fresh._text_encoder is not None
    assert fresh._text_encoder._loaded is None  # not even loaded at start
    fresh.embed_text(["This is a sound of rain."])
    assert fresh._text_encoder._loaded is not None
    fresh.embed_audio([WINDOWS["noise_1s"]])
    assert fresh._text_encoder._loaded is None
    # A prompt seen only now loads it again.
    assert fresh.embed_text(["This is a sound of siren."]).shape == (1, PROJECTION_DIM)


def test_padding_to_longer_prompts_does_not_change_an_embedding(
    tiny_clap_dir: Path, tmp_path: Path
) -> None:
    prompts = ["This is a sound of dog barking.", "the quick brown fox jumps over the lazy dog"]
    together = load_clap(
        ModelConfig(precision="fp32", name=str(tiny_clap_dir), cache_dir=tmp_path / "a")
    )
    alone = load_clap(
        ModelConfig(precision="fp32", name=str(tiny_clap_dir), cache_dir=tmp_path / "b")
    )
    np.testing.assert_allclose(
        alone.embed_text(prompts[:1])[0], together.embed_text(prompts)[0], atol=1e-5
    )


def test_unwritable_cache_is_not_an_error(
    tiny_clap_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="monitor"):
        uncached = load_clap(
            ModelConfig(precision="fp32", name=str(tiny_clap_dir), cache_dir=blocker / "cache")
        )
        text = uncached.embed_text(["This is a sound of rain."])
    assert text.shape == (1, PROJECTION_DIM)
    assert any("not writable" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("precision", "min_cosine"), [("bf16", 0.999), ("int8", 0.99)])
def test_lower_precisions_agree_with_fp32(
    runner: ClapRunner, tiny_clap_dir: Path, cache_dir: Path, precision: str, min_cosine: float
) -> None:
    cfg = ModelConfig.model_validate(
        {"name": str(tiny_clap_dir), "cache_dir": str(cache_dir), "precision": precision}
    )
    lower = load_clap(cfg)
    windows = list(WINDOWS.values())
    embeddings = lower.embed_audio(windows)
    assert embeddings.shape == (len(windows), PROJECTION_DIM)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    cosines = (embeddings * runner.embed_audio(windows)).sum(axis=1)
    print(f"{precision} vs fp32 cosine on the tiny model: {cosines}")
    assert cosines.min() > min_cosine
    assert lower.logit_scale == runner.logit_scale


def test_max_batch_splits_a_long_batch(tiny_clap_dir: Path, cache_dir: Path) -> None:
    windows = [*WINDOWS.values(), WINDOWS["noise_1s"] * 0.5]
    small = load_clap(
        ModelConfig(precision="fp32", name=str(tiny_clap_dir), cache_dir=cache_dir, max_batch=3)
    )
    large = load_clap(
        ModelConfig(precision="fp32", name=str(tiny_clap_dir), cache_dir=cache_dir, max_batch=8)
    )
    np.testing.assert_allclose(small.embed_audio(windows), large.embed_audio(windows), atol=1e-5)


def _fused_checkpoint(tiny_clap_dir: Path, tmp_path: Path) -> Path:
    import torch
    from transformers import ClapConfig, ClapModel

    fused = tmp_path / "fused"
    config: Any = ClapConfig.from_pretrained(str(tiny_clap_dir))
    config.audio_config.enable_fusion = True
    torch.manual_seed(0)
    ClapModel(config).save_pretrained(str(fused))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_clap_dir / name, fused)
    processor = json.loads((tiny_clap_dir / "processor_config.json").read_text(encoding="utf-8"))
    processor["feature_extractor"]["truncation"] = "fusion"
    (fused / "processor_config.json").write_text(json.dumps(processor), encoding="utf-8")
    return fused


def test_fused_checkpoint_uses_its_own_extractor(tiny_clap_dir: Path, tmp_path: Path) -> None:
    fused = _fused_checkpoint(tiny_clap_dir, tmp_path)
    fused_runner = load_clap(
        ModelConfig(precision="fp32", name=str(fused), cache_dir=tmp_path / "cache", trace=False)
    )
    embeddings = fused_runner.embed_audio([WINDOWS["noise_1s"], WINDOWS["chirp_10s"]])
    assert embeddings.shape == (2, PROJECTION_DIM)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_graph_equals_the_eager_tower(
    tiny_clap_dir: Path, cache_dir: Path, precision: str
) -> None:
    cfg = ModelConfig(name=str(tiny_clap_dir), cache_dir=cache_dir, precision=precision)
    graph = load_clap(cfg)
    eager = load_clap(cfg.model_copy(update={"trace": False}))
    assert isinstance(graph, TorchClapRunner) and isinstance(eager, TorchClapRunner)
    assert graph.traced and not eager.traced
    windows = list(WINDOWS.values())
    np.testing.assert_allclose(graph.embed_audio(windows), eager.embed_audio(windows), atol=1e-5)


def test_fp32_linear_layers_run_through_onednn(tiny_clap_dir: Path, runner: ClapRunner) -> None:
    import torch
    from transformers import ClapAudioModelWithProjection

    from monitor.model.kernels import linear_through_onednn
    from monitor.model.tower import normalised_tower

    plain: Any = ClapAudioModelWithProjection.from_pretrained(str(tiny_clap_dir)).eval()
    onednn: Any = ClapAudioModelWithProjection.from_pretrained(str(tiny_clap_dir)).eval()
    layers = sum(isinstance(m, torch.nn.Linear) for m in onednn.modules())
    assert linear_through_onednn(onednn) == layers > 0
    torch.manual_seed(3)
    features = torch.randn(2, 1, 1001, 64) * 20.0 - 40.0
    with torch.inference_mode():
        expected = normalised_tower(plain)(features)
        got = normalised_tower(onednn)(features)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # The daemon's fp32 graph calls the op (the comparison above would pass without it).
    assert isinstance(runner, TorchClapRunner)
    assert "audio_monitor::linear" in str(runner._tower.graph)


def test_a_refused_graph_leaves_the_eager_model_running(
    tiny_clap_dir: Path, tmp_path: Path, caplog: Any
) -> None:
    fused = _fused_checkpoint(tiny_clap_dir, tmp_path)  # its extractor cannot be traced
    with caplog.at_level(logging.WARNING, logger="monitor.model.torch_backend"):
        runner = load_clap(
            ModelConfig(precision="fp32", name=str(fused), cache_dir=tmp_path / "cache")
        )
    assert isinstance(runner, TorchClapRunner)
    assert not runner.traced
    assert any(
        "running the audio tower eagerly: the fusion" in r.getMessage() for r in caplog.records
    )
    assert runner.embed_audio([WINDOWS["noise_1s"]]).shape == (1, PROJECTION_DIM)


def _cached_graph(cache_dir: Path, precision: str) -> Path:
    (found,) = (cache_dir / "models").glob(f"*/{graph_file_names(precision)[0]}")
    return found


@pytest.mark.parametrize("damage", ["truncated graph", "graph of another torch"])
def test_an_unusable_cached_graph_is_traced_again(
    tiny_clap_dir: Path, tmp_path: Path, caplog: Any, damage: str
) -> None:
    cfg = ModelConfig(precision="fp32", name=str(tiny_clap_dir), cache_dir=tmp_path)
    expected = load_clap(cfg).embed_audio([WINDOWS["chirp_10s"]])
    path = _cached_graph(tmp_path, "fp32")
    if damage == "truncated graph":
        path.write_bytes(path.read_bytes()[:1000])
        said = "is unusable"
    else:
        meta = path.with_suffix(".json")
        meta.write_text(
            json.dumps({**json.loads(meta.read_text(encoding="utf-8")), "torch": "1.0.0"}),
            encoding="utf-8",
        )
        said = "from torch 1.0.0; tracing again"
    with caplog.at_level(logging.INFO, logger="monitor.model.torch_backend"):
        again = load_clap(cfg)
    assert any(said in r.getMessage() for r in caplog.records)
    assert isinstance(again, TorchClapRunner) and again.traced
    np.testing.assert_allclose(again.embed_audio([WINDOWS["chirp_10s"]]), expected, atol=1e-6)


def test_without_a_cache_the_graph_is_traced_at_every_start(
    tiny_clap_dir: Path, tmp_path: Path, runner: ClapRunner
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    uncached = load_clap(
        ModelConfig(precision="fp32", name=str(tiny_clap_dir), cache_dir=blocker / "cache")
    )
    assert isinstance(uncached, TorchClapRunner) and uncached.traced
    window = [WINDOWS["tone_1khz_5s"]]
    np.testing.assert_allclose(uncached.embed_audio(window), runner.embed_audio(window), atol=1e-6)


def test_trace_false_keeps_the_eager_model(tiny_clap_dir: Path, cache_dir: Path) -> None:
    runner = load_clap(
        ModelConfig(precision="fp32", name=str(tiny_clap_dir), cache_dir=cache_dir, trace=False)
    )
    assert isinstance(runner, TorchClapRunner)
    assert not runner.traced
    assert runner.embed_audio([WINDOWS["noise_1s"]]).shape == (1, PROJECTION_DIM)
