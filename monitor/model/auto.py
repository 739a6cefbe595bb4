"""precision auto: the fastest (backend, precision) agreeing with fp32, measured once a machine."""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from monitor.atomic import write_json_atomic
from monitor.config import ModelConfig
from monitor.errors import ModelError, first_line
from monitor.model.calibration import calibration_windows
from monitor.model.checkpoint import identity_of
from monitor.model.cpu import CpuInfo, cpu_info
from monitor.model.device import cuda_problem, device_label, resolve_device
from monitor.model.embedcache import EmbeddingCache

logger = logging.getLogger(__name__)

AUTO_FORMAT = 2  # bump when what is measured, or how the choice is made, changes
# Embedding cosine to fp32 every window must reach: below it, scores and thresholds tuned on
# fp32 would no longer carry over.
MIN_COSINE = 0.999
WARM_UP_WINDOWS = 1
# Six windows: one of each kind calibration_windows makes (noise, harmonics, a chirp, clicks,
# modulated noise, beeps); agreement is checked on all of them.
TIMED_WINDOWS = 5
# Not the calibration's seed: a statically quantised candidate is checked on windows it was
# not calibrated on (chirps alone let one through at 0.9990 that gave 0.9987 on noise).
PROBE_SEED = 14
BACKENDS = ("torch", "onnx", "openvino")
EXPORTED = ("onnx", "openvino")  # backends that run the ONNX export: no bf16
PRECISIONS = ("fp32", "int8", "bf16")


class AudioEmbedder(Protocol):
    """What is measured of a loaded runner (monitor.model.runner.ClapRunner has it)."""

    sample_rate_hz: int
    max_samples: int

    def embed_audio(self, windows: Sequence[np.ndarray], positions: Any = None) -> np.ndarray: ...


Loader = Callable[[ModelConfig], Any]


@dataclass(frozen=True)
class Candidate:
    """One way of running the audio tower."""

    backend: str
    precision: str

    @property
    def name(self) -> str:
        return f"{self.backend}/{self.precision}"


@dataclass(frozen=True)
class Excluded:
    """A candidate not tried on this machine, and why."""

    candidate: Candidate
    reason: str


@dataclass(frozen=True)
class Measurement:
    """What a candidate did on the generated windows: its speed and agreement, or its error."""

    candidate: Candidate
    ms_per_window: float | None = None  # median over the timed windows
    cosine_min: float | None = None  # lowest embedding cosine to the fp32 reference
    error: str | None = None


@dataclass(frozen=True)
class Choice:
    """The candidate kept, every measurement (in order) and the candidates not tried."""

    chosen: Candidate
    measurements: tuple[Measurement, ...]
    excluded: tuple[Excluded, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "chosen": asdict(self.chosen),
            "measurements": [asdict(m) for m in self.measurements],
            "excluded": [asdict(e) for e in self.excluded],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Choice:
        def measurement(item: Mapping[str, Any]) -> Measurement:
            return Measurement(
                Candidate(**item["candidate"]),
                item.get("ms_per_window"),
                item.get("cosine_min"),
                item.get("error"),
            )

        return cls(
            Candidate(**data["chosen"]),
            tuple(measurement(m) for m in data["measurements"]),
            tuple(Excluded(Candidate(**e["candidate"]), e["reason"]) for e in data["excluded"]),
        )


def candidates(
    backend: str,
    cpu: CpuInfo,
    onnx_available: bool,
    cuda: bool = False,
    onnx_cuda_problem: str | None = None,
    openvino_available: bool = False,
) -> tuple[tuple[Candidate, ...], tuple[Excluded, ...]]:
    """(candidates to measure, fp32 first; those left out with why) for model.backend, on
    the CPU or (cuda) an NVIDIA GPU, where onnx needs its CUDA provider and openvino (whose
    GPUs are Intel's) is not tried."""
    backends = BACKENDS if backend == "auto" else (backend,)
    tried: list[Candidate] = []
    excluded: list[Excluded] = []
    for name in backends:
        for precision in PRECISIONS:
            candidate = Candidate(name, precision)
            if name in EXPORTED and precision == "bf16":
                continue  # neither runtime's CPU path offers it
            if name == "openvino" and not openvino_available and backend == "auto":
                continue  # an optional extra; asked for by name, its loader says how to add it
            if cuda and name == "openvino":
                excluded.append(Excluded(candidate, "OpenVINO runs on the CPU here"))
            elif cuda and precision == "int8":
                excluded.append(Excluded(candidate, "int8 (dynamic quantisation) is CPU-only"))
            elif cuda and name == "onnx" and onnx_available and onnx_cuda_problem is not None:
                excluded.append(Excluded(candidate, onnx_cuda_problem))
            elif precision == "bf16" and not cuda and not cpu.native_bf16:
                # Emulated bf16 is several times slower than fp32: never worth measuring.
                excluded.append(Excluded(candidate, "no native bf16 on this CPU"))
            elif name == "onnx" and not onnx_available:
                excluded.append(Excluded(candidate, "onnxruntime is not installed"))
            else:
                tried.append(candidate)
    tried.sort(key=lambda c: c.precision != "fp32")  # stable: the references come first
    return tuple(tried), tuple(excluded)


def rejection(measurement: Measurement, min_cosine: float = MIN_COSINE) -> str | None:
    """Why a measured candidate cannot be chosen, or None if it can."""
    if measurement.error is not None:
        return f"failed: {measurement.error}"
    if measurement.ms_per_window is None:
        return "not timed"
    if measurement.cosine_min is None:
        return "no fp32 reference to check it against"
    if measurement.cosine_min < min_cosine:
        return f"cosine {measurement.cosine_min:.4f}: disagrees"
    return None


def choose(
    measurements: Sequence[Measurement],
    excluded: Sequence[Excluded] = (),
    min_cosine: float = MIN_COSINE,
) -> Choice:
    """The fastest agreeing candidate (the earliest of equals); ModelError if none agrees."""
    usable = [m for m in measurements if rejection(m, min_cosine) is None]
    if not usable:
        reasons = "; ".join(f"{m.candidate.name}: {rejection(m, min_cosine)}" for m in measurements)
        raise ModelError(f"precision auto: no way of running the model works ({reasons})")
    best = min(usable, key=lambda m: m.ms_per_window or 0.0)
    return Choice(best.candidate, tuple(measurements), tuple(excluded))


def _figures(measurement: Measurement, min_cosine: float, chosen: bool) -> str:
    reason = rejection(measurement, min_cosine)
    if measurement.error is not None:
        return f"{measurement.candidate.name} ({reason})"
    parts = [f"{measurement.ms_per_window:.0f} ms" + ("/window" if chosen else "")]
    if measurement.candidate.precision != "fp32" and measurement.cosine_min is not None:
        parts.append(f"cosine {measurement.cosine_min:.4f}" + (" vs fp32" if chosen else ""))
    if reason is not None and "cosine" in reason:
        parts[-1] += ": disagrees"
    elif reason is not None:
        parts.append(reason)
    return f"{measurement.candidate.name} ({', '.join(parts)})"


def describe(choice: Choice, min_cosine: float = MIN_COSINE) -> str:
    """One line: the choice with its figures, over the others with theirs or their reason."""
    chosen = next(m for m in choice.measurements if m.candidate == choice.chosen)
    others = [m for m in choice.measurements if m.candidate != choice.chosen]
    line = _figures(chosen, min_cosine, chosen=True)
    if others:
        line += " over " + " ".join(_figures(m, min_cosine, chosen=False) for m in others)
    if choice.excluded:
        line += "; not tried: " + ", ".join(
            f"{e.candidate.name} ({e.reason})" for e in choice.excluded
        )
    return line


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def library_versions() -> dict[str, str]:
    """The versions of what runs the candidates (read without importing them)."""
    return {name: _version(name) for name in ("torch", "onnxruntime", "openvino", "transformers")}


def usable_cpus() -> int:
    """CPUs this process may run on: what the libraries' default thread counts follow."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choice_key(
    cpu: CpuInfo,
    checkpoint_key: str,
    versions: Mapping[str, str],
    torch_threads: int,
    cpus: int,
    backend: str,
    trace: bool,
    device: str = "cpu",
) -> str:
    """What a cached choice holds for: another CPU, checkpoint, library release or thread
    count may change which candidate is fastest, so any of them makes another key."""
    text = json.dumps(
        [
            AUTO_FORMAT,
            cpu.model,
            list(cpu.isa),
            checkpoint_key,
            sorted(versions.items()),
            torch_threads,
            cpus,
            backend,
            trace,
            device,
        ]
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def probe_windows(sample_rate_hz: int, max_samples: int, count: int) -> list[np.ndarray]:
    """`count` full windows of generated audio of varied kinds and levels, held out from the
    static int8 calibration."""
    return calibration_windows(sample_rate_hz, max_samples, count, seed=PROBE_SEED)


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float(np.min(np.sum(a * b, axis=1)))


def _concrete(cfg: ModelConfig, candidate: Candidate) -> ModelConfig:
    return cfg.model_copy(update={"backend": candidate.backend, "precision": candidate.precision})


def _time(runner: AudioEmbedder, windows: Sequence[np.ndarray]) -> tuple[float, np.ndarray]:
    """(median ms per timed window, embeddings of every window), one window at a time as
    the daemon mostly scores them; the first WARM_UP_WINDOWS are not timed."""
    rows, ms = [], []
    for index, window in enumerate(windows):
        started = time.perf_counter()
        rows.append(np.asarray(runner.embed_audio([window]), dtype=np.float64)[0])
        if index >= WARM_UP_WINDOWS:
            ms.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(ms), np.stack(rows)


@dataclass(frozen=True)
class Measured:
    """What measure() found: every measurement, the runner kept, the first error raised."""

    measurements: list[Measurement]
    runner: Any
    first_error: Exception | None


def measure(
    cfg: ModelConfig,
    load: Loader,
    tried: Sequence[Candidate],
    keep: Callable[[Sequence[Measurement]], Candidate | None],
) -> Measured:
    """Load and time each candidate in turn, fp32 references first, and keep the runner of
    the candidate `keep` names after the last one. Only that runner and the one being
    measured are held at a time: the others are released as soon as `keep` stops naming
    them."""
    measurements: list[Measurement] = []
    first_error: Exception | None = None
    reference: dict[str, np.ndarray] = {}  # precision fp32 of the first backend that ran
    windows: list[np.ndarray] | None = None
    kept: tuple[Candidate, Any] | None = None
    for candidate in tried:
        try:
            runner = load(_concrete(cfg, candidate))
            if windows is None:
                windows = probe_windows(
                    runner.sample_rate_hz, runner.max_samples, WARM_UP_WINDOWS + TIMED_WINDOWS
                )
            ms, embeddings = _time(runner, windows)
        except Exception as err:  # a candidate that cannot run is skipped, with its reason
            logger.debug("precision auto: %s failed", candidate.name, exc_info=True)
            measurements.append(Measurement(candidate, error=first_line(err)))
            first_error = first_error or err
            continue
        if candidate.precision == "fp32" and "fp32" not in reference:
            reference["fp32"] = embeddings
        fp32 = reference.get("fp32")
        cosine = None if fp32 is None else _cosine_min(embeddings, fp32)
        measurements.append(Measurement(candidate, ms, cosine))
        logger.debug("precision auto: %s %.1f ms/window, cosine %s", candidate.name, ms, cosine)
        wanted = keep(measurements)
        if wanted == candidate:
            kept = (candidate, runner)
        elif kept is not None and kept[0] != wanted:
            kept = None
        del runner
        gc.collect()  # the released runner's memory goes before the next one loads
    return Measured(measurements, None if kept is None else kept[1], first_error)


def _best_so_far(measurements: Sequence[Measurement]) -> Candidate | None:
    try:
        return choose(measurements).chosen
    except ModelError:
        return None


def _choice_path(cfg: ModelConfig, cpu: CpuInfo) -> Path | None:
    """Where this machine's choice for the configured checkpoint is kept; None: no cache."""
    identity = identity_of(cfg)
    directory = (
        None if identity is None else EmbeddingCache.open(cfg.cache_dir).artefact_dir(identity)
    )
    if identity is None or directory is None:
        return None
    key = choice_key(
        cpu,
        identity.key,
        library_versions(),
        cfg.torch_threads,
        usable_cpus(),
        cfg.backend,
        cfg.trace,
        device_label(cfg),
    )
    return directory / f"auto-v{AUTO_FORMAT}-{key}.json"


def read_choice(path: Path | None) -> Choice | None:
    """The cached choice at `path`, if it is there and readable."""
    if path is None:
        return None
    try:
        return Choice.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("ignoring unreadable choice %s (%s); measuring again", path, err)
        return None


def _store(path: Path | None, choice: Choice, cpu: CpuInfo) -> None:
    if path is None:
        logger.info("precision auto: no cache, so the choice is measured at every start")
        return
    data = {
        **choice.as_json(),
        "format": AUTO_FORMAT,
        "cpu": cpu.describe(),
        "versions": library_versions(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        write_json_atomic(path, data)
    except OSError as err:
        logger.warning("cannot cache the precision choice in %s (%s)", path, err)


def load_auto(cfg: ModelConfig, load: Loader, cpu: CpuInfo | None = None) -> Any:
    """The runner precision auto chooses: the cached choice on this machine, else each
    candidate measured on generated windows and the fastest agreeing one kept."""
    cpu = cpu or cpu_info()
    path = _choice_path(cfg, cpu)
    cached = read_choice(path)
    if cached is not None:
        try:
            runner = load(_concrete(cfg, cached.chosen))
        except ModelError as err:
            logger.warning(
                "precision auto: the cached choice %s fails to load (%s); measuring again",
                cached.chosen.name,
                err,
            )
        else:
            logger.info("precision auto (cached on this machine): %s", describe(cached))
            return runner
    onnx = importlib.util.find_spec("onnxruntime") is not None
    openvino = importlib.util.find_spec("openvino") is not None
    cuda = cfg.device == "cuda"
    onnx_cuda = cuda_problem("onnx") if cuda and onnx and cfg.backend != "torch" else None
    tried, excluded = candidates(cfg.backend, cpu, onnx, cuda, onnx_cuda, openvino)
    logger.info(
        "precision auto: timing %s on %d generated windows each (once on this machine)",
        ", ".join(c.name for c in tried),
        WARM_UP_WINDOWS + TIMED_WINDOWS,
    )
    measured = measure(cfg, load, tried, _best_so_far)
    if measured.first_error is not None and all(m.error for m in measured.measurements):
        # Nothing loads (a wrong path, no weights): the loader's own message says how to fix it.
        raise measured.first_error
    choice = choose(measured.measurements, excluded)
    logger.info("precision auto: %s", describe(choice))
    _store(path if path is not None else _choice_path(cfg, cpu), choice, cpu)
    return measured.runner


def load_bf16(cfg: ModelConfig, load: Loader, cpu: CpuInfo | None = None) -> Any:
    """An explicit bf16: loaded as asked, with a WARNING and the measured slowdown vs fp32
    when the CPU has no native bf16 (emulated bf16 can be several times slower)."""
    cpu = cpu or cpu_info()
    if cpu.native_bf16:
        return load(cfg)
    bf16, fp32 = Candidate("torch", "bf16"), Candidate("torch", "fp32")
    measured = measure(cfg, load, (fp32, bf16), lambda _: bf16)
    runner = measured.runner
    timed = {m.candidate: m for m in measured.measurements}
    slow, fast = timed[bf16].ms_per_window, timed[fp32].ms_per_window
    if runner is None:  # bf16 itself failed: load it again for its own error
        runner = load(cfg)
    if slow is not None and fast is not None and fast > 0:
        logger.warning(
            "model.precision bf16 on a CPU without native bf16 (%s): %.0f ms/window, %.1fx "
            "the %.0f ms of fp32; use precision auto, fp32 or int8",
            cpu.describe(),
            slow,
            slow / fast,
            fast,
        )
    else:
        logger.warning(
            "model.precision bf16 on a CPU without native bf16 (%s) is emulated and usually "
            "slower than fp32; use precision auto, fp32 or int8",
            cpu.describe(),
        )
    return runner


def load_configured(cfg: ModelConfig, load: Loader, cpu: CpuInfo | None = None) -> Any:
    """model.backend and model.precision resolved: auto measured (or cached), an explicit
    precision with backend auto on torch, bf16 warned about where it is emulated; the
    device first (monitor.model.device)."""
    cfg = resolve_device(cfg)
    if cfg.precision == "auto":
        return load_auto(cfg, load, cpu)
    if cfg.backend == "auto":
        cfg = cfg.model_copy(update={"backend": "torch"})
    # onnx refuses bf16 itself; a GPU's bf16 is its own
    if cfg.precision == "bf16" and cfg.backend == "torch" and cfg.device != "cuda":
        return load_bf16(cfg, load, cpu)
    return load(cfg)
