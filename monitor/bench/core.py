"""`audio-monitor bench`: the scoring path against the transformers pipeline; a daemon replay."""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO, cast

import numpy as np

from monitor.audio.resample import (
    MODEL_SAMPLE_RATE_HZ,
    StreamResampler,
    resample_to,
    stream_position,
)
from monitor.audio.ringbuffer import RingBuffer
from monitor.audio.source import Source, SourceStats, StreamFormat
from monitor.audio.windowing import to_mono
from monitor.config import (
    DEFAULT_PROMPT_TEMPLATE,
    MAX_WINDOW_SECONDS,
    Config,
    LabelSetConfig,
    ModelConfig,
    SourceConfig,
    looks_like_path,
)
from monitor.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    ConfigError,
    ModelError,
    SourceError,
    first_line,
)
from monitor.frames import Event, Window
from monitor.model.embedcache import cache_directory
from monitor.model.runtime import prepare_for_inference
from monitor.pipeline.scoring import LabelSetScorer, build_scorers
from monitor.pipeline.worker import ScoringTiming

log = logging.getLogger(__name__)

HUB_ID = "laion/clap-htsat-unfused"
CONFIG_DIR_ENV = "AUDIO_MONITOR_CLAP_CONFIG_DIR"
RANDOM_NOTE = "random weights: timings are real, scores are not"
RANDOM_BUILD_VERSION = 1  # part of the cache key: bump when the random checkpoint changes
RANDOM_SEED = 20240601
GENERATED_RATE_HZ = 44_100  # a common capture rate that is not the model's: resampling is timed
BENCH_SET_NAME = "bench"
CHILD_TIMEOUT_SECONDS = 3600.0
SETTLE_SECONDS = 0.05
REPLAY_HOP_SECONDS = 1.0  # the daemon's default window.hop_seconds

# The ESC-50 categories in words: realistic prompts for the text tower (and for the tokenizer of
# a random checkpoint, whose vocabulary is trained on them).
BENCH_LABELS = (
    "dog barking",
    "rooster crowing",
    "pig oinking",
    "cow mooing",
    "frog croaking",
    "cat meowing",
    "hen clucking",
    "insects buzzing",
    "sheep bleating",
    "crow cawing",
    "rain",
    "sea waves",
    "crackling fire",
    "crickets",
    "chirping birds",
    "water drops",
    "wind",
    "pouring water",
    "toilet flush",
    "thunderstorm",
    "crying baby",
    "sneezing",
    "clapping",
    "breathing",
    "coughing",
    "footsteps",
    "laughing",
    "brushing teeth",
    "snoring",
    "drinking and sipping",
    "knocking on a wooden door",
    "mouse click",
    "keyboard typing",
    "door creaking",
    "can opening",
    "washing machine",
    "vacuum cleaner",
    "clock alarm",
    "clock ticking",
    "glass breaking",
    "helicopter",
    "chainsaw",
    "siren",
    "car horn",
    "engine",
    "train",
    "church bells",
    "airplane",
    "fireworks",
    "hand saw",
)

# Targets of the performance issue; they hold for this workload only.
TARGET_WINDOW_SECONDS = 10.0
TARGET_LABELS = 30
TARGET_CORES = 2
TARGET_SPEEDUP_FP32 = 5.0
TARGET_SPEEDUP_REDUCED = 10.0
TARGET_FRONT_END_FRACTION = 0.10
TARGET_RSS_FP32 = 0.6
TARGET_RSS_ONNX_INT8 = 0.3


# ---------------------------------------------------------------------------------------------
# Small helpers


def _summary(values: Sequence[float]) -> dict[str, float] | None:
    """Median, min and max of per-window values (None when there are none)."""
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return {
        "median": float(np.median(array)),
        "min": float(array.min()),
        "max": float(array.max()),
    }


def _percentiles(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return {
        "p50": float(np.percentile(array, 50)),
        "p99": float(np.percentile(array, 99)),
        "max": float(array.max()),
    }


def memory_mib() -> dict[str, float | None]:
    """This process's memory in MiB: rss (now), peak (high-water mark), anon and file (the
    resident anonymous and file-backed parts: memory-mapped weights count as file)."""
    try:
        text = Path("/proc/self/status").read_text(encoding="ascii")
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

        def mib(name: str) -> float | None:
            return int(fields[name].split()[0]) / 1024 if name in fields else None

        return {
            "rss": mib("VmRSS"),
            "peak": mib("VmHWM"),
            "anon": mib("RssAnon"),
            "file": mib("RssFile"),
        }
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Linux reports kilobytes, macOS bytes.
        scale = 1024 * 1024 if sys.platform == "darwin" else 1024
        return {"rss": None, "peak": peak / scale, "anon": None, "file": None}


class _SteadyMemory:
    """RSS sampled right after each window once warm; steady = the largest such sample.

    Right after a window every weight page has just been touched, so the sample does not
    depend on the kernel reclaiming cold file-backed pages between windows (some VMs run
    DAMON page-out), nor on when the sample happens to fall.
    """

    def __init__(self) -> None:
        self.samples: list[dict[str, float | None]] = []

    def after_window(self) -> None:
        self.samples.append(memory_mib())

    def result(self) -> dict[str, float | None]:
        warm = self.samples[1:] or self.samples
        best = max(warm, key=lambda m: m["rss"] or 0.0) if warm else memory_mib()
        # The kernel updates the high-water mark lazily: never report it below a sample.
        peaks = [m["rss"] for m in self.samples] + [memory_mib()["peak"]]
        known = [p for p in peaks if p is not None]
        return {
            "steady": best["rss"],
            "anon": best["anon"],
            "file": best["file"],
            "peak": max(known) if known else None,
        }


def bench_labels(count: int) -> list[str]:
    """`count` distinct sound labels: the ESC-50 categories, then numbered extras."""
    labels = list(BENCH_LABELS[:count])
    labels += [f"sound number {i + 1}" for i in range(len(labels), count)]
    return labels


def bench_label_set(labels: Sequence[str]) -> LabelSetConfig:
    """One softmax set with the pipeline's own template: the monitor must score exactly alike."""
    return LabelSetConfig.model_validate(
        {
            "name": BENCH_SET_NAME,
            "labels": list(labels),
            "prompt_template": [DEFAULT_PROMPT_TEMPLATE],
        }
    )


# ---------------------------------------------------------------------------------------------
# Audio


@dataclass(frozen=True)
class Workload:
    """The windows both paths score: mono at the source rate, as the ring buffer holds them,
    cut every hop from one continuous stream as the daemon cuts them."""

    windows: list[np.ndarray] = field(repr=False)
    source_rate_hz: int
    window_seconds: float
    description: str
    hop_seconds: float
    # Each window's first sample at the source rate (the ring buffer's index).
    starts: list[int] = field(repr=False)

    @property
    def positions(self) -> list[int | None]:
        """Each window's first sample at the model's rate, as Window.model_start_index: the
        monitor's path passes them so that windows share frames."""
        return [stream_position(s, self.source_rate_hz, MODEL_SAMPLE_RATE_HZ) for s in self.starts]

    def model_windows(self) -> list[np.ndarray]:
        """The same windows resampled to the model's rate (what the pipeline is given)."""
        return [resample_to(w, self.source_rate_hz, MODEL_SAMPLE_RATE_HZ) for w in self.windows]


def generated_audio(seconds: float, rate_hz: int, seed: int) -> np.ndarray:
    """Deterministic sound-like audio: coloured noise, modulated tones and a chirp."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = max(1, round(seconds * rate_hz))
    t = np.arange(n) / rate_hz
    pole = rng.uniform(0.0, 0.95)
    noise = lfilter([1.0 - pole], [1.0, -pole], rng.standard_normal(n))
    signal = noise / (np.std(noise) + 1e-12) * rng.uniform(0.05, 0.6)
    for _ in range(int(rng.integers(1, 4))):
        tone_hz = rng.uniform(80.0, 4000.0)
        am_hz = rng.uniform(0.2, 8.0)
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * am_hz * t)
        signal += rng.uniform(0.1, 1.0) * envelope * np.sin(2 * np.pi * tone_hz * t)
    f0, f1 = rng.uniform(200.0, 1000.0), rng.uniform(1000.0, 8000.0)
    duration = t[-1] if n > 1 else 1.0
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * duration))
    signal += rng.uniform(0.0, 0.5) * np.sin(phase)
    level_dbfs = rng.uniform(-32.0, -12.0)
    rms = float(np.sqrt(np.mean(signal * signal))) or 1.0
    out: np.ndarray = (signal * (10 ** (level_dbfs / 20) / rms)).astype(np.float32)
    return out


def _file_audio(path: Path) -> tuple[np.ndarray, int, str]:
    """Every audio file under `path`, mono, joined at the first file's rate."""
    import soundfile as sf

    from monitor.audio.decode import find_audio_files, open_sound_file

    files = find_audio_files([path])
    if not files:
        raise SourceError(f"--audio {path}: no audio files")
    parts: list[np.ndarray] = []
    rate_hz = 0
    for file in files:
        try:
            with open_sound_file(file) as handle:
                file_rate = int(handle.samplerate)
                data = handle.read(dtype="float32", always_2d=True)
        except SourceError as err:
            raise SourceError(f"--audio {err}") from err
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
            raise SourceError(f"--audio {file}: cannot decode ({err})") from err
        rate_hz = rate_hz or file_rate
        parts.append(resample_to(np.nan_to_num(to_mono(data)), file_rate, rate_hz))
    what = str(path) if len(files) == 1 else f"{path} ({len(files)} files)"
    return np.concatenate(parts), rate_hz, what


def make_workload(
    audio: Path | None, windows: int, window_seconds: float, hop_seconds: float
) -> Workload:
    """`windows` windows every `hop_seconds` of one stream: the given audio (looped as
    needed), or generated audio; sizes rounded to whole samples as the Windower rounds them."""
    if audio is None:
        rate = GENERATED_RATE_HZ
        what = "generated"
    else:
        samples, rate, what = _file_audio(audio)
    size = max(1, round(window_seconds * rate))
    step = max(1, round(hop_seconds * rate))
    total = size + (windows - 1) * step
    if audio is None:
        stream = generated_audio(total / rate, rate, RANDOM_SEED)
    else:
        stream = np.resize(samples, total).astype(np.float32)
    cut = [stream[i * step : i * step + size].copy() for i in range(windows)]
    starts = [i * step for i in range(windows)]
    return Workload(cut, rate, window_seconds, f"{what}, {rate} Hz", hop_seconds, starts)


# ---------------------------------------------------------------------------------------------
# The checkpoint: a directory, the hub checkpoint if cached, else random full-size weights


@dataclass(frozen=True)
class Checkpoint:
    """What both paths load: always a local directory."""

    path: Path
    origin: str  # "directory", "hub" or "random"
    random_weights: bool
    config_dir: Path | None  # where a random checkpoint's architecture came from
    fallback_reason: str | None  # why the hub checkpoint was not used

    def as_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "path": str(self.path),
            "random_weights": self.random_weights,
            "config_dir": None if self.config_dir is None else str(self.config_dir),
            "fallback_reason": self.fallback_reason,
        }


def _hub_snapshot(hub_id: str, download: bool) -> tuple[Path | None, str | None]:
    """The hub checkpoint as a local snapshot with weights, or None and why not."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(
            snapshot_download(
                hub_id,
                allow_patterns=["*.json", "*.txt", "*.safetensors"],
                local_files_only=not download,
            )
        )
    except Exception as err:  # offline, not cached, unknown repository: all mean "not usable"
        if not download:
            return None, f"{hub_id} is not in the Hugging Face cache"
        return None, f"{hub_id} cannot be loaded ({first_line(err)})"
    if not any(folder.glob("*.safetensors")) or not (folder / "config.json").is_file():
        return None, f"the weights of {hub_id} are not in the Hugging Face cache"
    return folder, None


def _has_config(directory: Path) -> bool:
    return (directory / "config.json").is_file() and (
        directory / "preprocessor_config.json"
    ).is_file()


def find_config_dir(hub_id: str = HUB_ID) -> Path:
    """The checkpoint's config.json and preprocessor_config.json, for random weights."""
    from_env = os.environ.get(CONFIG_DIR_ENV)
    if from_env:
        path = Path(from_env).expanduser()
        if not _has_config(path):
            raise ModelError(
                f"{CONFIG_DIR_ENV}={from_env}: needs config.json and preprocessor_config.json "
                f"of {hub_id}"
            )
        return path
    # A checkout next to a shared copy of the configuration (how development machines have it).
    beside_repo = Path(__file__).resolve().parents[3] / "shared" / "clap-htsat-unfused"
    if hub_id == HUB_ID and _has_config(beside_repo):
        return beside_repo
    from huggingface_hub import snapshot_download

    try:
        folder = Path(
            snapshot_download(hub_id, allow_patterns=["config.json", "preprocessor_config.json"])
        )
    except Exception as err:
        raise ModelError(
            f"no CLAP checkpoint to bench: {hub_id} is neither cached nor reachable "
            f"({first_line(err)}); pass --model DIR, or set {CONFIG_DIR_ENV} to a directory "
            "holding its config.json and preprocessor_config.json"
        ) from err
    if not _has_config(folder):
        raise ModelError(f"{hub_id}: the hub has no config.json/preprocessor_config.json")
    return folder


def resolve_checkpoint(model: str | None) -> Checkpoint:
    """--model as a directory or hub id when it loads; else random full-size weights."""
    if model is not None:
        path = Path(model).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ModelError(f"--model {model}: no config.json; not a CLAP checkpoint")
            return Checkpoint(path, "directory", False, None, None)
        if looks_like_path(model):
            raise ModelError(f"--model {model}: no such directory")
    hub_id = model or HUB_ID
    # Only an explicit --model downloads; by default the bench never fetches 600 MB silently.
    snapshot, reason = _hub_snapshot(hub_id, download=model is not None)
    if snapshot is not None:
        return Checkpoint(snapshot, "hub", False, None, None)
    config_dir = find_config_dir(hub_id)
    log.info("%s; using random weights of the same architecture", reason)
    return Checkpoint(ensure_random_checkpoint(config_dir), "random", True, config_dir, reason)


def _tokenizer_corpus() -> list[str]:
    template = DEFAULT_PROMPT_TEMPLATE
    corpus = [template.replace("{}", "").strip(), *BENCH_LABELS]
    corpus += [template.format(label) for label in BENCH_LABELS]
    corpus += ["sound number " + " ".join(str(i) for i in range(100))]  # labels past the 50th
    return corpus


def ensure_random_checkpoint(config_dir: Path) -> Path:
    """A full-size random checkpoint for `config_dir`, built once into the cache and reused."""
    key = hashlib.sha256()
    for name in ("config.json", "preprocessor_config.json"):
        key.update((config_dir / name).read_bytes())
    key.update(f"v{RANDOM_BUILD_VERSION} seed {RANDOM_SEED}".encode())
    key.update("\n".join(_tokenizer_corpus()).encode())
    target = cache_directory(None) / f"bench-random-{key.hexdigest()[:16]}"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        log.info("random checkpoint: %s (cached)", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("building a random full-size checkpoint from %s in %s (once)", config_dir, target)
    building = Path(tempfile.mkdtemp(prefix=".bench-random-", dir=target.parent))
    try:
        build_random_checkpoint(config_dir, building)
        try:
            building.rename(target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # not another bench's finished copy
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def _train_tokenizer(path: Path, vocab_size: int) -> None:
    """A byte-level BPE with RoBERTa's special ids, trained on the bench prompts.

    Every word of the prompts becomes one token, as with RoBERTa's own vocabulary, so the text
    tower sees sequences of the real length.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    for token_id, token in enumerate(specials):
        if tokenizer.token_to_id(token) != token_id:
            raise ModelError(f"random checkpoint: special token {token} did not get id {token_id}")
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False
    )
    tokenizer.save(str(path))


def build_random_checkpoint(config_dir: Path, directory: Path) -> Path:
    """Save ClapModel(config) with random weights, a tokenizer and the checkpoint's extractor.

    The compute per window is that of the real checkpoint; the scores mean nothing.
    """
    import torch
    from transformers import (
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        RobertaTokenizerFast,
    )
    from transformers.utils import logging as hf_logging

    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    config: Any = ClapConfig.from_pretrained(str(config_dir))
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer_file = directory / "_tokenizer.json"
    _train_tokenizer(tokenizer_file, min(2000, int(config.text_config.vocab_size)))
    torch.manual_seed(RANDOM_SEED)
    model: Any = ClapModel(config)
    model.eval()
    with torch.no_grad():
        # Mel input is in dB (about -100..+20); typical statistics instead of 0/1.
        norm = model.audio_model.audio_encoder.batch_norm
        norm.running_mean.uniform_(-60.0, -20.0)
        norm.running_var.uniform_(100.0, 400.0)
    model.save_pretrained(str(directory))
    max_length = int(config.text_config.max_position_embeddings) - 2  # RoBERTa's offset of 2
    tokenizer = RobertaTokenizerFast(
        tokenizer_file=str(tokenizer_file), model_max_length=max_length
    )
    extractor: Any = ClapFeatureExtractor.from_pretrained(str(config_dir))
    processor_class: Any = ClapProcessor
    processor_class(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(
        str(directory)
    )
    tokenizer_file.unlink()
    return directory


# ---------------------------------------------------------------------------------------------
# The reference: transformers' zero-shot-audio-classification pipeline


def load_pipeline(path: Path, threads: int) -> Any:
    """The reference pipeline on CPU, fp32, with `threads` intra-op threads (0 = default)."""
    import torch
    from transformers import pipeline

    if threads > 0:
        torch.set_num_threads(threads)
    return pipeline("zero-shot-audio-classification", model=str(path), device="cpu")


def pipeline_scores(pipe: Any, window_48k: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """The pipeline's softmax scores for one window, in the order of `labels`."""
    out = pipe(
        window_48k, candidate_labels=list(labels), hypothesis_template=DEFAULT_PROMPT_TEMPLATE
    )
    by_label = {row["label"]: float(row["score"]) for row in out}
    return np.array([by_label[label] for label in labels], dtype=np.float64)


def pipeline_audio_embeddings(pipe: Any, windows_48k: Sequence[np.ndarray]) -> np.ndarray:
    """Normalised audio embeddings of the pipeline's own model and extractor (fp32 reference)."""
    import torch
    import torch.nn.functional as F

    rows = []
    with torch.inference_mode():
        for window in windows_48k:
            inputs = pipe.feature_extractor(
                [window], sampling_rate=pipe.feature_extractor.sampling_rate, return_tensors="pt"
            )
            output = pipe.model.get_audio_features(**inputs)
            features = output if isinstance(output, torch.Tensor) else output.pooler_output
            rows.append(F.normalize(features.float(), dim=-1).numpy()[0])
    return np.stack(rows).astype(np.float64)


@dataclass
class ReferenceRun:
    """The pipeline's timings, scores and embeddings in the main process."""

    ok: bool = False
    error: str | None = None
    load_seconds: float | None = None
    ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    scores: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    torch_threads: int | None = None
    name: str = "pipeline"


class _ReferencePath:
    """The pipeline, loaded and warmed up, timed one window at a time."""

    def __init__(self, checkpoint: Checkpoint, workload: Workload, labels: Sequence[str]) -> None:
        self.run = ReferenceRun()
        self.checkpoint = checkpoint
        self.windows = workload.model_windows()  # resampled outside the timing
        self.labels = list(labels)
        self.rows: list[np.ndarray] = []
        self.pipe: Any = None

    def load(self, threads: int) -> None:
        started = time.monotonic()
        self.pipe = load_pipeline(self.checkpoint.path, threads)
        self.run.load_seconds = time.monotonic() - started
        pipeline_scores(self.pipe, self.windows[0], self.labels)  # warm-up
        import torch

        self.run.torch_threads = int(torch.get_num_threads())

    def measure(self, indices: Sequence[int]) -> None:
        for index in indices:
            started, cpu = time.monotonic(), time.process_time()
            self.rows.append(pipeline_scores(self.pipe, self.windows[index], self.labels))
            self.run.ms.append((time.monotonic() - started) * 1000.0)
            self.run.cpu_ms.append((time.process_time() - cpu) * 1000.0)

    def finish(self) -> None:
        self.run.scores = np.stack(self.rows)
        self.run.embeddings = pipeline_audio_embeddings(self.pipe, self.windows)
        self.run.ok = True

    def release(self) -> None:
        self.pipe = None


# ---------------------------------------------------------------------------------------------
# The monitor's path: load_clap + build_scorers (text embedded once) + per window stages


@dataclass
class MonitorRun:
    """One precision/backend of the monitor's path in the main process."""

    backend: str
    precision: str
    ok: bool = False
    error: str | None = None
    load_seconds: float | None = None
    text_embedding_seconds: float | None = None
    ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(
        default_factory=lambda: {"resample": [], "features": [], "audio_tower": [], "scoring": []}
    )
    features_separate: bool = False
    scores: np.ndarray | None = None
    embeddings: np.ndarray | None = None

    @property
    def name(self) -> str:
        return f"{self.backend}/{self.precision}"


def model_config(
    checkpoint: Checkpoint, backend: str, precision: str, threads: int, batch: int
) -> ModelConfig:
    from pydantic import ValidationError

    try:
        return ModelConfig.model_validate(
            {
                "name": str(checkpoint.path),
                "backend": backend,
                "precision": precision,
                "torch_threads": threads,
                "max_batch": max(1, min(batch, 64)),
            }
        )
    except ValidationError as err:
        what = str(err.errors()[0]["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{backend}/{precision}: {what}") from err


AudioStage = Callable[[Sequence[np.ndarray], Sequence[int | None] | None], Any]


def stage_split(runner: Any) -> tuple[AudioStage, Callable[[Any], np.ndarray]] | None:
    """(front end, audio tower) when the runner exposes them apart, else None."""
    front = getattr(runner, "audio_features", None)
    tower = getattr(runner, "embed_audio_features", None)
    if callable(front) and callable(tower):
        return front, tower
    return None


def _monitor_batch(
    runner: Any,
    scorers: Sequence[LabelSetScorer],
    batch: Sequence[np.ndarray],
    source_rate_hz: int,
    positions: Sequence[int | None] | None = None,
    stream: tuple[StreamResampler, Sequence[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """One batch as the worker runs it: resample each window (through the stream's
    resampler with each window's source start, if given, as the Windower does), embed
    together (with each window's stream position, if given), score each set.

    Returns (embeddings, scores of the first set, seconds per stage for the whole batch).
    """
    seconds: dict[str, float] = {}
    started = time.monotonic()
    if stream is None:
        resampled = [resample_to(to_mono(w), source_rate_hz) for w in batch]
    else:
        resampler, starts = stream
        resampled = [resampler(to_mono(w), start) for w, start in zip(batch, starts, strict=True)]
    seconds["resample"] = time.monotonic() - started
    split = stage_split(runner)
    if split is None:
        started = time.monotonic()
        embeddings = runner.embed_audio(resampled, positions)
        seconds["audio_tower"] = time.monotonic() - started
    else:
        front, tower = split
        started = time.monotonic()
        features = front(resampled, positions)
        seconds["features"] = time.monotonic() - started
        started = time.monotonic()
        embeddings = tower(features)
        seconds["audio_tower"] = time.monotonic() - started
    started = time.monotonic()
    scores = [scorer.score(embeddings) for scorer in scorers]
    seconds["scoring"] = time.monotonic() - started
    return np.asarray(embeddings), scores[0], seconds


class _MonitorPath:
    """One precision/backend of the monitor's path, loaded as the daemon loads it."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        backend: str,
        precision: str,
        workload: Workload,
        labels: Sequence[str],
    ) -> None:
        self.run = MonitorRun(backend, precision)
        self.checkpoint = checkpoint
        self.workload = workload
        self.labels = list(labels)
        self.runner: Any = None
        self.scorers: list[LabelSetScorer] = []
        self.embeddings: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.resampler = StreamResampler(workload.source_rate_hz, MODEL_SAMPLE_RATE_HZ)

    @property
    def name(self) -> str:
        return self.run.name

    def load(self, threads: int, batch: int) -> None:
        from monitor.model.torch_backend import load_clap

        run = self.run
        cfg = model_config(self.checkpoint, run.backend, run.precision, threads, batch)
        started = time.monotonic()
        self.runner = load_clap(cfg)
        run.load_seconds = time.monotonic() - started
        started = time.monotonic()
        self.scorers = build_scorers(
            [bench_label_set(self.labels)], self.runner.embed_text, self.runner.logit_scale
        )
        run.text_embedding_seconds = time.monotonic() - started
        run.features_separate = stage_split(self.runner) is not None
        # No positions, no stream resampler: nothing is cached, so the first timed window
        # starts cold, as a daemon's first window does.
        warm_up = self.workload.windows[:batch]
        _monitor_batch(self.runner, self.scorers, warm_up, self.workload.source_rate_hz)

    def measure(self, indices: Sequence[int]) -> None:
        run = self.run
        windows = [self.workload.windows[i] for i in indices]
        every_position = self.workload.positions
        positions = [every_position[i] for i in indices]
        stream = (self.resampler, [self.workload.starts[i] for i in indices])
        started, cpu = time.monotonic(), time.process_time()
        emb, first_set, seconds = _monitor_batch(
            self.runner, self.scorers, windows, self.workload.source_rate_hz, positions, stream
        )
        count = len(windows)
        run.ms += [(time.monotonic() - started) * 1000.0 / count] * count
        run.cpu_ms += [(time.process_time() - cpu) * 1000.0 / count] * count
        for stage, value in seconds.items():
            run.stages[stage] += [value * 1000.0 / count] * count
        self.embeddings.append(emb)
        self.scores.append(first_set)

    def finish(self) -> None:
        self.run.embeddings = np.concatenate(self.embeddings).astype(np.float64)
        self.run.scores = np.concatenate(self.scores).astype(np.float64)
        self.run.ok = True

    def release(self) -> None:
        self.runner = None


_TimedPath = _ReferencePath | _MonitorPath


def measure_interleaved(
    reference: _ReferencePath,
    monitors: Sequence[_MonitorPath],
    windows: int,
    batch: int,
    threads: int,
) -> None:
    """Load every path, then time them batch by batch in turn (the order rotating), so that
    a machine whose load changes during the run slows every path alike. A path that fails is
    recorded with its one-line error and dropped; the others go on."""
    paths: list[_TimedPath] = [reference, *monitors]
    live: list[_TimedPath] = []
    for path in paths:
        try:
            log.info("loading %s", path.run.name)
            if isinstance(path, _ReferencePath):
                path.load(threads)
            else:
                path.load(threads, batch)
            live.append(path)
        except Exception as err:
            _failed(path, err)
    rounds = [list(range(i, min(i + batch, windows))) for i in range(0, windows, batch)]
    for number, indices in enumerate(rounds):
        shift = number % len(live) if live else 0
        for path in live[shift:] + live[:shift]:
            # Thread pools spin for a moment after their work (OpenMP, ONNX Runtime): let the
            # previous path's go idle so they do not compete with this one.
            time.sleep(SETTLE_SECONDS)
            try:
                path.measure(indices)
            except Exception as err:
                _failed(path, err)
                live.remove(path)
        log.info("timed batch %d/%d of %d path(s)", number + 1, len(rounds), len(live))
    for path in live:
        try:
            path.finish()
        except Exception as err:
            _failed(path, err)
    for path in paths:
        path.release()
    gc.collect()


def _failed(path: _TimedPath, err: BaseException) -> None:
    path.run.ok = False
    path.run.error = first_line(err)
    path.release()
    log.warning("%s failed: %s", path.run.name, path.run.error)


# ---------------------------------------------------------------------------------------------
# Memory: each path alone in a child process


def _run_child_reference(spec: dict[str, Any], windows: np.ndarray) -> dict[str, Any]:
    rate = int(spec["source_rate_hz"])
    labels = spec["labels"]
    started = time.monotonic()
    pipe = load_pipeline(Path(spec["model"]), int(spec["threads"]))
    load_seconds = time.monotonic() - started
    after_load = memory_mib()["rss"]
    memory = _SteadyMemory()
    for window in windows:
        pipeline_scores(pipe, resample_to(window, rate, MODEL_SAMPLE_RATE_HZ), labels)
        memory.after_window()
    return {"load_seconds": load_seconds, "after_load": after_load, **memory.result()}


def _run_child_monitor(spec: dict[str, Any], windows: np.ndarray) -> dict[str, Any]:
    from monitor.model.torch_backend import load_clap

    cfg = ModelConfig.model_validate(spec["model_config"])
    started = time.monotonic()
    runner = load_clap(cfg)
    scorers = build_scorers(
        [bench_label_set(spec["labels"])], runner.embed_text, runner.logit_scale
    )
    load_seconds = time.monotonic() - started
    gc.collect()
    after_load = memory_mib()["rss"]
    rate = int(spec["source_rate_hz"])
    size = int(spec["batch"])
    positions: list[int | None] = spec["positions"]
    starts: list[int] = spec["starts"]
    resampler = StreamResampler(rate, MODEL_SAMPLE_RATE_HZ)
    memory = _SteadyMemory()
    for start in range(0, len(windows), size):
        resampled = [
            resampler(w, first)
            for w, first in zip(
                windows[start : start + size], starts[start : start + size], strict=True
            )
        ]
        embeddings = runner.embed_audio(resampled, positions[start : start + size])
        for scorer in scorers:
            scorer.score(embeddings)
        memory.after_window()
    return {
        "load_seconds": load_seconds,
        "after_load": after_load,
        "torch_imported": "torch" in sys.modules,
        "transformers_imported": "transformers" in sys.modules,
        **memory.result(),
    }


def child_main(argv: Sequence[str]) -> int:
    """`python -m monitor.bench --child SPEC.json`: run one path, print its memory as JSON."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    prepare_for_inference()
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    windows = np.load(spec["windows"])
    try:
        if spec["kind"] == "reference":
            result = _run_child_reference(spec, windows)
        else:
            result = _run_child_monitor(spec, windows)
        out = {"ok": True, **result}
    except Exception as err:
        out = {"ok": False, "error": first_line(err)}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return EXIT_OK if out["ok"] else EXIT_FAILURE


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    return env


def measure_memory(spec: dict[str, Any], work_dir: Path, name: str) -> dict[str, Any]:
    """Run one path in a fresh interpreter; its steady (after the work) and peak RSS in MiB."""
    spec_path = work_dir / f"child-{name.replace('/', '-')}.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    command = [sys.executable, "-m", "monitor.bench", "--child", str(spec_path)]
    log.info("memory of %s in a child process", name)
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_SECONDS,
            env=_child_env(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"child process timed out after {CHILD_TIMEOUT_SECONDS:g} s"}
    lines = done.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = done.stderr.strip().splitlines()
        reason = tail[-1] if tail else f"exit code {done.returncode}"
        return {"ok": False, "error": f"child process failed: {reason}"}
    return result


# ---------------------------------------------------------------------------------------------
# Report


def _agreement(run: MonitorRun, reference: ReferenceRun) -> dict[str, float | None]:
    empty: dict[str, float | None] = {
        "max_abs_score_diff": None,
        "top1_agreement": None,
        "embedding_cosine_min": None,
        "embedding_cosine_mean": None,
    }
    if not (run.ok and reference.ok) or run.scores is None or reference.scores is None:
        return empty
    assert run.embeddings is not None and reference.embeddings is not None
    cosine = np.sum(run.embeddings * reference.embeddings, axis=1)
    return {
        "max_abs_score_diff": float(np.max(np.abs(run.scores - reference.scores))),
        "top1_agreement": float(
            np.mean(np.argmax(run.scores, axis=1) == np.argmax(reference.scores, axis=1))
        ),
        "embedding_cosine_min": float(cosine.min()),
        "embedding_cosine_mean": float(cosine.mean()),
    }


RSS_KEYS = ("steady", "peak", "after_load", "anon", "file")


def _rss_json(memory: dict[str, Any] | None) -> dict[str, Any]:
    if memory is None or not memory.get("ok"):
        error = "not measured" if memory is None else memory.get("error")
        return {**dict.fromkeys(RSS_KEYS), "error": error}
    return {**{key: memory.get(key) for key in RSS_KEYS}, "error": None}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def reference_json(
    reference: ReferenceRun, memory: dict[str, Any] | None, window_seconds: float
) -> dict[str, Any]:
    ms = _summary(reference.ms)
    return {
        "name": "pipeline",
        "ok": reference.ok,
        "error": reference.error,
        "load_seconds": reference.load_seconds,
        "ms": ms,
        "cpu_ms": _summary(reference.cpu_ms),
        "rtf": None if ms is None else ms["median"] / (window_seconds * 1000.0),
        "rss_mib": _rss_json(memory),
    }


def monitor_json(
    run: MonitorRun,
    reference: dict[str, Any],
    memory: dict[str, Any] | None,
    window_seconds: float,
) -> dict[str, Any]:
    ms = _summary(run.ms)
    cpu_ms = _summary(run.cpu_ms)
    stages = {name: _summary(values) for name, values in run.stages.items()}
    tower = stages["audio_tower"]
    front = sum(s["median"] for s in (stages["resample"], stages["features"]) if s is not None)
    rss = _rss_json(memory)
    ref_ms = reference["ms"]
    return {
        "name": run.name,
        "backend": run.backend,
        "precision": run.precision,
        "ok": run.ok,
        "error": run.error,
        "load_seconds": run.load_seconds,
        "text_embedding_seconds": run.text_embedding_seconds,
        "ms": ms,
        "cpu_ms": cpu_ms,
        "stages_ms": stages,
        "features_separate": run.features_separate,
        "front_end_fraction": (
            _ratio(front, tower["median"]) if tower is not None and run.features_separate else None
        ),
        "rtf": None if ms is None else ms["median"] / (window_seconds * 1000.0),
        "speedup_vs_pipeline": _ratio(
            None if ref_ms is None else ref_ms["median"], None if ms is None else ms["median"]
        ),
        # Fastest against fastest: what an otherwise idle machine gets.
        "speedup_min_vs_pipeline": _ratio(
            None if ref_ms is None else ref_ms["min"], None if ms is None else ms["min"]
        ),
        # CPU time is distorted less by other processes than wall time: the same in CPU time.
        "cpu_speedup_vs_pipeline": _ratio(
            None if reference["cpu_ms"] is None else reference["cpu_ms"]["median"],
            None if cpu_ms is None else cpu_ms["median"],
        ),
        "rss_mib": rss,
        # Whether the child process running this path ever imported torch (onnx: it must not).
        "torch_imported": None if memory is None else memory.get("torch_imported"),
        "transformers_imported": None if memory is None else memory.get("transformers_imported"),
        "rss_ratio_vs_pipeline": _ratio(rss["steady"], reference["rss_mib"]["steady"]),
        "agreement": {},
    }


def _target(
    target: str, config: str, value: float | None, limit: float, at_least: bool, why: str = ""
) -> dict[str, Any]:
    met = None if value is None else (value >= limit if at_least else value <= limit)
    return {
        "target": target,
        "config": config,
        "value": value,
        "limit": limit,
        "met": met,
        "detail": why if value is None else "",
    }


def evaluate_targets(monitor: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target of the issue against the configurations measured (met None = not measured)."""
    by_name = {m["name"]: m for m in monitor}
    targets: list[dict[str, Any]] = []

    def missing(name: str) -> str:
        run = by_name.get(name)
        if run is None:
            return f"{name} not measured"
        return run["error"] or "no value"

    fp32 = by_name.get("torch/fp32", {})
    targets.append(
        _target(
            f"throughput >= {TARGET_SPEEDUP_FP32:g}x pipeline",
            "torch/fp32",
            fp32.get("speedup_vs_pipeline"),
            TARGET_SPEEDUP_FP32,
            True,
            missing("torch/fp32"),
        )
    )
    reduced = [m for m in monitor if m["precision"] in ("bf16", "int8")]
    for run in reduced:
        targets.append(
            _target(
                f"throughput >= {TARGET_SPEEDUP_REDUCED:g}x pipeline",
                run["name"],
                run["speedup_vs_pipeline"],
                TARGET_SPEEDUP_REDUCED,
                True,
                missing(run["name"]),
            )
        )
    if not reduced:
        targets.append(
            _target(
                f"throughput >= {TARGET_SPEEDUP_REDUCED:g}x pipeline",
                "bf16 or int8",
                None,
                TARGET_SPEEDUP_REDUCED,
                True,
                "not measured: add --precision bf16 int8",
            )
        )
    for run in monitor:
        why = missing(run["name"])
        if run["ok"] and not run["features_separate"]:
            why = "the runner does not expose its front end apart from the audio tower"
        targets.append(
            _target(
                f"front end (resample + features) < {TARGET_FRONT_END_FRACTION:.0%} of audio tower",
                run["name"],
                run["front_end_fraction"],
                TARGET_FRONT_END_FRACTION,
                False,
                why,
            )
        )
    for name, limit in (("torch/fp32", TARGET_RSS_FP32), ("onnx/int8", TARGET_RSS_ONNX_INT8)):
        run = by_name.get(name, {})
        why = missing(name)
        if run.get("ok") and run.get("rss_ratio_vs_pipeline") is None:
            why = run["rss_mib"].get("error") or "reference RSS not measured"
        targets.append(
            _target(
                f"steady RSS <= {limit:g}x pipeline (torch fp32)",
                name,
                run.get("rss_ratio_vs_pipeline"),
                limit,
                False,
                why,
            )
        )
    return targets


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _times(value: float | None) -> str:
    return _fmt(value, ".2f") + "x" if value is not None else "-"


def format_table(report: dict[str, Any]) -> str:
    """The comparison as readable text: both paths side by side, stages, targets."""
    work = report["workload"]
    env = report["environment"]
    lines = [
        f"audio-monitor bench: {work['windows']} windows x {work['window_seconds']:g} s "
        f"every {work['hop_seconds']:g} s ({work['audio']}), {work['labels']} labels, "
        f"batch {work['batch']}, "
        f"{env['torch_threads']} torch threads on {env['cpu_count']} CPUs "
        f"(load average before/after {env['load_average_before']} / "
        f"{env['load_average_after']})",
        f"checkpoint: {report['checkpoint']['origin']} {report['checkpoint']['path']}",
    ]
    if report["note"]:
        lines.append(report["note"])
    ref = report["reference"]
    rows: list[tuple[dict[str, Any], dict[str, Any] | None]] = [(ref, None)]
    rows += [(m, m) for m in report["monitor"]]
    speed = (
        f"{'path':<12} {'ms/window median':>16} {'min':>8} {'max':>8} {'CPU ms':>8} "
        f"{'RTF':>7} {'speedup':>8} {'(min)':>7} {'CPU speedup':>11}"
    )
    lines += ["", speed, "-" * len(speed)]
    for row, mon in rows:
        if not row["ok"]:
            lines.append(f"{row['name']:<12} FAILED: {row['error']}")
            continue
        ms, cpu = row["ms"], row["cpu_ms"]
        lines.append(
            f"{row['name']:<12} {ms['median']:>16.1f} {ms['min']:>8.1f} {ms['max']:>8.1f} "
            f"{_fmt(cpu and cpu['median'], '.1f'):>8} {row['rtf']:>7.4f} "
            f"{_times(mon['speedup_vs_pipeline'] if mon else 1.0):>8} "
            f"{_times(mon['speedup_min_vs_pipeline'] if mon else 1.0):>7} "
            f"{_times(mon['cpu_speedup_vs_pipeline'] if mon else 1.0):>11}"
        )
    memory = (
        f"{'path':<12} {'RSS steady':>10} {'peak':>8} {'anon':>8} {'file':>8} {'ratio':>7} "
        f"{'max|dscore|':>11} {'top-1':>6} {'cos min':>9}"
    )
    lines += ["", memory + "   (MiB)", "-" * len(memory)]
    for row, mon in rows:
        if not row["ok"]:
            continue
        rss = row["rss_mib"]
        agree = mon["agreement"] if mon is not None else {}
        if rss["error"] is None:
            sizes = (
                f"{_fmt(rss['steady'], '.0f'):>10} {_fmt(rss['peak'], '.0f'):>8} "
                f"{_fmt(rss['anon'], '.0f'):>8} {_fmt(rss['file'], '.0f'):>8} "
                f"{_times(mon['rss_ratio_vs_pipeline'] if mon else 1.0):>7}"
            )
        else:
            sizes = f"{'failed':>10} {'':>8} {'':>8} {'':>8} {'':>7}"
        lines.append(
            f"{row['name']:<12} {sizes} "
            f"{_fmt(agree.get('max_abs_score_diff'), '.2e'):>11} "
            f"{_fmt(agree.get('top1_agreement'), '.0%'):>6} "
            f"{_fmt(agree.get('embedding_cosine_min'), '.6f'):>9}"
        )
        if rss["error"] is not None:
            lines.append(f"{'':<12} memory: {rss['error']}")
    ok_runs = [m for m in report["monitor"] if m["ok"]]
    if ok_runs:
        lines += [
            "",
            "monitor stages, ms per window (median): resample, features, audio tower, scoring",
        ]
        for m in ok_runs:
            med = {k: None if v is None else v["median"] for k, v in m["stages_ms"].items()}
            features = _fmt(med["features"], ".1f") if m["features_separate"] else "(in tower)"
            lines.append(
                f"  {m['name']:<12} resample {_fmt(med['resample'], '.1f')}  features {features}"
                f"  audio tower {_fmt(med['audio_tower'], '.1f')}  scoring "
                f"{_fmt(med['scoring'], '.3f')}  text embedding once "
                f"{_fmt(m['text_embedding_seconds'], '.2f')} s  "
                f"load {_fmt(m['load_seconds'], '.1f')} s"
            )
    lines += ["", "targets (for 10 s windows, 30 labels, 2 cores):"]
    if not report["targets_workload"]:
        lines.append("  (this run's workload differs: the verdicts below are indicative only)")
    for t in report["targets"]:
        verdict = {True: "met", False: "NOT MET", None: "n/a"}[t["met"]]
        value = "" if t["value"] is None else f": {t['value']:.3g}"
        detail = f" ({t['detail']})" if t["detail"] else ""
        lines.append(f"  [{verdict:>7}] {t['config']:<12} {t['target']}{value}{detail}")
    return "\n".join(lines) + "\n"


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for package in ("torch", "transformers", "onnxruntime", "numpy"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


# ---------------------------------------------------------------------------------------------
# Replay: the whole daemon on a file replayed as fast as possible


class _Recorder:
    """Times of ring-buffer writes and of each window's scoring being done, for latencies.

    The daemon's observer: it hears when streaming starts and about every batch scored.
    """

    def __init__(self) -> None:
        self.write_frames: list[int] = []
        self.write_times: list[float] = []
        self.outputs: dict[int, tuple[float, float]] = {}  # window end index -> (mono, cpu)
        self.started: tuple[float, float] | None = None  # (monotonic, cpu) as streaming starts

    def wrote(self, written_frames: int) -> None:
        self.write_frames.append(written_frames)
        self.write_times.append(time.monotonic())

    def written_at(self, end_index: int) -> float | None:
        i = bisect_left(self.write_frames, end_index)
        return self.write_times[i] if i < len(self.write_times) else None

    def on_streaming_started(self) -> None:
        self.started = (time.monotonic(), time.process_time())

    def on_scored(
        self, windows: Sequence[Window], events: Sequence[Event], timing: ScoringTiming
    ) -> None:
        cpu = time.process_time()
        for window in windows:
            self.outputs[window.end_index] = (timing.finished_monotonic, cpu)


class _RecordingRing:
    """What the file source writes through: the daemon's ring buffer, with write times noted."""

    def __init__(self, ring: RingBuffer, recorder: _Recorder) -> None:
        self._ring = ring
        self._recorder = recorder

    def write(self, block: np.ndarray, wall_time_end: float | None = None) -> None:
        self._ring.write(block, wall_time_end)
        self._recorder.wrote(self._ring.written_frames)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ring, name)


class _RecordingSource(Source):
    """The daemon's own source, writing through a _RecordingRing."""

    def __init__(self, inner: Source, recorder: _Recorder) -> None:
        self.inner = inner
        self.recorder = recorder
        self.source_id = inner.source_id

    def open(self) -> StreamFormat:
        return self.inner.open()

    def start(self, ring: RingBuffer) -> None:
        self.inner.start(cast(RingBuffer, _RecordingRing(ring, self.recorder)))

    def stop(self) -> None:
        self.inner.stop()

    @property
    def finished(self) -> bool:
        return self.inner.finished

    @property
    def error(self) -> BaseException | None:
        return self.inner.error

    def stats(self) -> SourceStats:
        return self.inner.stats()


def _parse_mqtt(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    host, _, port = spec.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--mqtt {spec}: expected host:port, e.g. localhost:1883")
    return host, int(port)


def _replay_audio(
    audio: Path | None, seconds: float, window_seconds: float
) -> tuple[np.ndarray, int, str]:
    if audio is None:
        rate = GENERATED_RATE_HZ
        segment = max(window_seconds, 1.0)
        count = math.ceil(seconds / segment)
        parts = [generated_audio(segment, rate, RANDOM_SEED + i) for i in range(count)]
        samples = np.concatenate(parts)[: round(seconds * rate)]
        return samples, rate, f"generated, {rate} Hz"
    samples, rate, what = _file_audio(audio)
    return np.resize(samples, round(seconds * rate)).astype(np.float32), rate, f"{what}, {rate} Hz"


def _replay_config(
    checkpoint: Checkpoint,
    backend: str,
    precision: str,
    args: argparse.Namespace,
    labels: Sequence[str],
    wav: Path,
    hop_seconds: float,
    mqtt: tuple[str, int] | None,
    work_dir: Path,
) -> Config:
    model = model_config(checkpoint, backend, precision, args.threads, args.batch)
    data: dict[str, Any] = {
        "model": model.model_dump(),
        "source": {"type": "file", "id": "replay", "path": str(wav), "realtime": False},
        "window": {"seconds": args.window_seconds, "hop_seconds": hop_seconds},
        "label_sets": [bench_label_set(labels).model_dump()],
        "mqtt": {
            "enabled": mqtt is not None,
            "host": mqtt[0] if mqtt else "localhost",
            "port": mqtt[1] if mqtt else 1883,
            "topic_prefix": "audio-monitor-bench",
            "device_id": "bench",
            "outbox": {"directory": str(work_dir / f"outbox-{backend}-{precision}")},
        },
        "output": {"json_lines": False},
    }
    try:
        return Config.model_validate(data)
    except ValueError as err:
        raise ConfigError(f"bench --replay-minutes: {first_line(err)}") from err


def replay_once(config: Config, audio_seconds: float) -> dict[str, Any]:
    """Run the daemon in-process on the config's file; throughput and latencies."""
    from monitor.service.daemon import Daemon
    from monitor.service.notify import SystemdNotifier
    from monitor.service.pipeline import make_source

    recorder = _Recorder()

    def source_factory(cfg: SourceConfig) -> Source:
        return _RecordingSource(make_source(cfg), recorder)

    daemon = Daemon(
        config,
        source_factory=source_factory,
        notifier=SystemdNotifier(environ={}),
        observer=recorder,
    )
    worker_log = logging.getLogger("monitor.pipeline.worker")
    level = worker_log.level
    worker_log.setLevel(logging.WARNING)  # one INFO line per event would flood a long replay
    try:
        daemon.run()
    finally:
        worker_log.setLevel(level)
    snapshot = daemon.snapshot()
    if snapshot is None or recorder.started is None or not recorder.outputs:
        raise ModelError("the daemon scored no window")
    start_mono, start_cpu = recorder.started
    ends = sorted(recorder.outputs)
    latencies, processing = [], []
    previous_done = start_mono
    for end in ends:
        done, _cpu = recorder.outputs[end]
        written = recorder.written_at(end)
        if written is not None:
            latencies.append((done - written) * 1000.0)
            processing.append((done - max(written, previous_done)) * 1000.0)
        previous_done = done
    last_mono, last_cpu = max(recorder.outputs.values())
    wall = max(1e-9, last_mono - start_mono)
    cpu = last_cpu - start_cpu
    stats = snapshot.worker
    return {
        "audio_seconds": audio_seconds,
        "windows": len(ends),
        "wall_seconds": wall,
        "windows_per_second": len(ends) / wall,
        "speed_vs_realtime": audio_seconds / wall,
        "cpu_seconds": cpu,
        "cpu_seconds_per_audio_hour": cpu * 3600.0 / audio_seconds,
        "latency_ms": _percentiles(latencies),
        "processing_ms": _percentiles(processing),
        "windows_scored": stats.windows_scored,
        "windows_skipped_lagging": stats.windows_skipped_lagging,
        "events": stats.events,
        "lost_frames": snapshot.lost_frames,
    }


def run_replay(
    args: argparse.Namespace, checkpoint: Checkpoint, labels: Sequence[str], work_dir: Path
) -> dict[str, Any]:
    import soundfile as sf

    load_before = _load_average()
    mqtt = _parse_mqtt(args.mqtt)
    seconds = float(args.replay_minutes) * 60.0
    hop = _hop_seconds(args)
    samples, rate, what = _replay_audio(args.audio, seconds, args.window_seconds)
    wav = work_dir / "replay.wav"
    sf.write(str(wav), samples, rate, subtype="PCM_16")
    audio_seconds = len(samples) / rate
    runs = []
    for backend in _unique(args.backend):
        for precision in _unique(args.precision):
            name = f"{backend}/{precision}"
            entry: dict[str, Any] = {"name": name, "backend": backend, "precision": precision}
            try:
                config = _replay_config(
                    checkpoint, backend, precision, args, labels, wav, hop, mqtt, work_dir
                )
                log.info("replaying %.1f min through the daemon with %s", seconds / 60, name)
                entry.update(ok=True, error=None, **replay_once(config, audio_seconds))
            except Exception as err:
                entry.update(ok=False, error=first_line(err))
                log.warning("replay with %s failed: %s", name, entry["error"])
            gc.collect()
            runs.append(entry)
    return {
        "mode": "replay",
        "note": RANDOM_NOTE if checkpoint.random_weights else None,
        "checkpoint": checkpoint.as_json(),
        "environment": _environment(args.threads, load_before),
        "replay": {
            "minutes": float(args.replay_minutes),
            "audio": what,
            "source_rate_hz": rate,
            "window_seconds": float(args.window_seconds),
            "hop_seconds": hop,
            "labels": len(labels),
            "max_batch": args.batch,
            "mqtt": None if mqtt is None else f"{mqtt[0]}:{mqtt[1]}",
        },
        "runs": runs,
    }


def format_replay(report: dict[str, Any]) -> str:
    r = report["replay"]
    lines = [
        f"audio-monitor bench --replay-minutes {r['minutes']:g}: {r['audio']}, "
        f"{r['window_seconds']:g} s windows every {r['hop_seconds']:g} s, {r['labels']} labels, "
        f"max batch {r['max_batch']}, MQTT {r['mqtt'] or 'off'}",
        f"checkpoint: {report['checkpoint']['origin']} {report['checkpoint']['path']}",
    ]
    if report["note"]:
        lines.append(report["note"])
    lines.append("")
    header = (
        f"{'config':<12} {'windows':>7} {'win/s':>7} {'x realtime':>10} {'CPU s/audio h':>13} "
        f"{'latency p50':>11} {'p99 ms':>8} {'processing p50':>14} {'p99 ms':>8}"
    )
    lines += [header, "-" * len(header)]
    for run in report["runs"]:
        if not run["ok"]:
            lines.append(f"{run['name']:<12} FAILED: {run['error']}")
            continue
        lat = run["latency_ms"] or {}
        proc = run["processing_ms"] or {}
        lines.append(
            f"{run['name']:<12} {run['windows']:>7} {run['windows_per_second']:>7.2f} "
            f"{run['speed_vs_realtime']:>10.1f} {run['cpu_seconds_per_audio_hour']:>13.0f} "
            f"{_fmt(lat.get('p50'), '.0f'):>11} {_fmt(lat.get('p99'), '.0f'):>8} "
            f"{_fmt(proc.get('p50'), '.0f'):>14} {_fmt(proc.get('p99'), '.0f'):>8}"
        )
    lines += [
        "",
        "latency: from the window's last sample written into the ring buffer to its scores "
        "handed to the outputs (includes waiting behind earlier windows: the file is replayed "
        "as fast as possible); processing: the same from when the worker could start on it.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The command


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _check_args(args: argparse.Namespace) -> None:
    if args.labels < 2:
        raise ConfigError(f"--labels: at least 2 (got {args.labels}); a softmax over 1 is always 1")
    if args.windows < 1:
        raise ConfigError(f"--windows: at least 1 (got {args.windows})")
    if not 0 < args.window_seconds <= MAX_WINDOW_SECONDS:
        raise ConfigError(
            f"--window-seconds: must be in (0, {MAX_WINDOW_SECONDS:g}] "
            f"(got {args.window_seconds:g})"
        )
    hop = getattr(args, "hop_seconds", None)
    if hop is not None and not 0 < hop <= 3600:
        raise ConfigError(f"--hop-seconds: must be in (0, 3600] (got {hop:g})")
    if not 1 <= args.batch <= 64:
        raise ConfigError(f"--batch: must be 1..64 (got {args.batch})")
    if args.threads < 0:
        raise ConfigError(f"--threads: must be 0 (default) or more (got {args.threads})")
    if args.replay_minutes is not None and args.replay_minutes <= 0:
        raise ConfigError(f"--replay-minutes: must be positive (got {args.replay_minutes:g})")
    if args.mqtt and args.replay_minutes is None:
        raise ConfigError("--mqtt is only used with --replay-minutes")
    _parse_mqtt(args.mqtt)


def _hop_seconds(args: argparse.Namespace) -> float:
    """--hop-seconds, else the daemon's default hop (or the window, if shorter: no gaps)."""
    hop = getattr(args, "hop_seconds", None)
    return float(hop) if hop is not None else min(REPLAY_HOP_SECONDS, args.window_seconds)


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _environment(threads: int, load_before: list[float] | None) -> dict[str, Any]:
    """The machine and versions; the load averages show whether something else competed."""
    torch_threads: int | None = threads or None
    if "torch" in sys.modules:
        torch_threads = int(sys.modules["torch"].get_num_threads())
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch_threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": _versions(),
        "bench_peak_rss_mib": memory_mib()["peak"],
        "load_average_before": load_before,
        "load_average_after": _load_average(),
    }


def run_compare(
    args: argparse.Namespace, checkpoint: Checkpoint, labels: Sequence[str], work_dir: Path
) -> dict[str, Any]:
    """Timings and agreement in this process, memory in children; the whole report."""
    load_before = _load_average()
    workload = make_workload(args.audio, args.windows, args.window_seconds, _hop_seconds(args))
    configs = [(b, p) for b in _unique(args.backend) for p in _unique(args.precision)]
    log.info(
        "bench: %d windows x %g s, %d labels, pipeline and %s",
        args.windows,
        args.window_seconds,
        len(labels),
        ", ".join(f"{b}/{p}" for b, p in configs),
    )
    reference_path = _ReferencePath(checkpoint, workload, labels)
    monitor_paths = [_MonitorPath(checkpoint, b, p, workload, labels) for b, p in configs]
    measure_interleaved(
        reference_path, monitor_paths, len(workload.windows), args.batch, args.threads
    )
    reference = reference_path.run
    runs = [path.run for path in monitor_paths]
    windows_path = work_dir / "windows.npy"
    np.save(windows_path, np.stack(workload.windows))
    common = {
        "windows": str(windows_path),
        "source_rate_hz": workload.source_rate_hz,
        "positions": workload.positions,
        "starts": workload.starts,
        "labels": list(labels),
        "threads": args.threads,
        "batch": args.batch,
        "model": str(checkpoint.path),
    }
    ref_memory = measure_memory({**common, "kind": "reference"}, work_dir, "pipeline")
    ref_json = reference_json(reference, ref_memory, workload.window_seconds)
    monitor = []
    for run in runs:
        memory = None
        if run.ok:
            cfg = model_config(checkpoint, run.backend, run.precision, args.threads, args.batch)
            spec = {**common, "kind": "monitor", "model_config": cfg.model_dump(mode="json")}
            memory = measure_memory(spec, work_dir, run.name)
        entry = monitor_json(run, ref_json, memory, workload.window_seconds)
        entry["agreement"] = _agreement(run, reference)
        monitor.append(entry)
    env = _environment(args.threads, load_before)
    if reference.torch_threads is not None:
        env["torch_threads"] = reference.torch_threads
    target_workload = (
        workload.window_seconds == TARGET_WINDOW_SECONDS
        and len(labels) == TARGET_LABELS
        and (env["cpu_count"] == TARGET_CORES or args.threads == TARGET_CORES)
    )
    return {
        "mode": "compare",
        "note": RANDOM_NOTE if checkpoint.random_weights else None,
        "checkpoint": checkpoint.as_json(),
        "environment": env,
        "workload": {
            "windows": len(workload.windows),
            "window_seconds": workload.window_seconds,
            "hop_seconds": workload.hop_seconds,
            "labels": len(labels),
            "label_sets": 1,
            "template": DEFAULT_PROMPT_TEMPLATE,
            "batch": args.batch,
            "audio": workload.description,
            "source_rate_hz": workload.source_rate_hz,
        },
        "reference": ref_json,
        "monitor": monitor,
        "targets": evaluate_targets(monitor),
        "targets_workload": target_workload,
    }


def run_bench(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`audio-monitor bench`: 0 when every path ran, 1 when one of them failed."""
    out = out or sys.stdout
    _check_args(args)
    # One BLAS thread: numpy's pool spinning after a matmul slows the next torch call.
    prepare_for_inference()
    labels = bench_labels(args.labels)
    checkpoint = resolve_checkpoint(args.model)
    if checkpoint.random_weights:
        log.warning("%s (%s)", RANDOM_NOTE, checkpoint.path)
    with tempfile.TemporaryDirectory(prefix="audio-monitor-bench-") as tmp:
        if args.replay_minutes is not None:
            report = run_replay(args, checkpoint, labels, Path(tmp))
            ok = all(run["ok"] for run in report["runs"])
            text = format_replay(report)
        else:
            report = run_compare(args, checkpoint, labels, Path(tmp))
            ok = report["reference"]["ok"] and all(m["ok"] for m in report["monitor"])
            text = format_table(report)
    out.write(json.dumps(report, indent=2) + "\n" if args.json else text)
    out.flush()
    return EXIT_OK if ok else EXIT_FAILURE
