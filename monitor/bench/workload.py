"""What the bench scores: its labels, and windows of generated or file audio."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monitor.audio.resample import MODEL_SAMPLE_RATE_HZ, resample_to, stream_position
from monitor.audio.windowing import to_mono
from monitor.config import DEFAULT_PROMPT_TEMPLATE, LabelSetConfig
from monitor.errors import SourceError

RANDOM_SEED = 20240601  # generated audio and random weights: every run measures the same
GENERATED_RATE_HZ = 44_100  # a common capture rate that is not the model's: resampling is timed
BENCH_SET_NAME = "bench"
DEFAULT_HOP_SECONDS = 1.0  # the daemon's default window.hop_seconds

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


def hop_or_default(hop_seconds: float | None, window_seconds: float) -> float:
    """--hop-seconds, else the daemon's default hop (or the window, if shorter: no gaps)."""
    if hop_seconds is not None:
        return float(hop_seconds)
    return min(DEFAULT_HOP_SECONDS, window_seconds)


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


def file_audio(path: Path) -> tuple[np.ndarray, int, str]:
    """Every audio file under `path`, mono, joined at the first file's rate."""
    from monitor.audio.decode import find_audio_files, read_sound_file

    files = find_audio_files([path])
    if not files:
        raise SourceError(f"--audio {path}: no audio files")
    parts: list[np.ndarray] = []
    rate_hz = 0
    for file in files:
        try:
            data, file_rate = read_sound_file(file)
        except SourceError as err:
            raise SourceError(f"--audio {err}") from err
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
        samples, rate, what = file_audio(audio)
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


QUIET_FLOOR_DBFS = -50.0
QUIET_EVENTS_PER_MINUTE = 1.5


def quiet_home(
    rate_hz: int,
    seconds: float,
    events: Sequence[tuple[float, float, float]],
    floor_dbfs: float = QUIET_FLOOR_DBFS,
    seed: int = RANDOM_SEED,
) -> np.ndarray:
    """Steady noise at `floor_dbfs` with short sounds, each (start s, length s, level dBFS):
    a 1 kHz tone with a little noise, as a door knock or a beep adds to a quiet room."""
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal(round(seconds * rate_hz)) * 10 ** (floor_dbfs / 20)
    for start, length, level in events:
        a = round(start * rate_hz)
        b = min(len(signal), round((start + length) * rate_hz))
        t = np.arange(b - a) / rate_hz
        amplitude = math.sqrt(2) * 10 ** (level / 20)
        signal[a:b] += amplitude * np.sin(2 * np.pi * 1000 * t)
    out: np.ndarray = signal.astype(np.float32)
    return out


def quiet_home_events(seconds: float, seed: int = RANDOM_SEED) -> list[tuple[float, float, float]]:
    """Sparse short sounds for a quiet home: about 1.5 a minute, 0.2-3 s long, -40 to -15 dBFS."""
    rng = np.random.default_rng(seed)
    count = rng.poisson(QUIET_EVENTS_PER_MINUTE * seconds / 60.0)
    starts = np.sort(rng.uniform(0.0, max(0.0, seconds - 3.0), count))
    return [
        (float(start), float(rng.uniform(0.2, 3.0)), float(rng.uniform(-40.0, -15.0)))
        for start in starts
    ]


def replay_audio(
    audio: Path | None, seconds: float, window_seconds: float, soundscape: str | None = None
) -> tuple[np.ndarray, int, str]:
    """`seconds` of the given audio (looped as needed), of a generated soundscape, or of
    generated audio, for a replay; with its rate and a description."""
    if soundscape == "quiet-home":
        events = quiet_home_events(seconds)
        samples = quiet_home(GENERATED_RATE_HZ, seconds, events)
        what = (
            f"quiet home: noise at {QUIET_FLOOR_DBFS:g} dBFS with {len(events)} short sounds, "
            f"{GENERATED_RATE_HZ} Hz"
        )
        return samples, GENERATED_RATE_HZ, what
    if audio is None:
        rate = GENERATED_RATE_HZ
        segment = max(window_seconds, 1.0)
        count = math.ceil(seconds / segment)
        parts = [generated_audio(segment, rate, RANDOM_SEED + i) for i in range(count)]
        samples = np.concatenate(parts)[: round(seconds * rate)]
        return samples, rate, f"generated, {rate} Hz"
    samples, rate, what = file_audio(audio)
    return np.resize(samples, round(seconds * rate)).astype(np.float32), rate, f"{what}, {rate} Hz"
