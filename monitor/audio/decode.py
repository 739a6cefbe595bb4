"""Audio files through libsndfile (the only module importing soundfile): reading and writing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from monitor.audio.resample import MODEL_SAMPLE_RATE_HZ, resample_to
from monitor.audio.windowing import to_mono
from monitor.errors import SourceError

MAX_WINDOW_SECONDS = 10.0
# Extensions looked for inside directories; files named explicitly are tried whatever their name.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf"}
)


@dataclass(frozen=True)
class Clip:
    """A decoded recording: mono float32 at 48 kHz, and what it was before."""

    path: Path
    samples: np.ndarray = field(repr=False)
    source_rate_hz: int
    channels: int

    @property
    def duration_seconds(self) -> float:
        return len(self.samples) / MODEL_SAMPLE_RATE_HZ

    @property
    def is_silent(self) -> bool:
        """Digital silence: every sample exactly zero."""
        return not np.any(self.samples)


@dataclass(frozen=True)
class ClipWindow:
    """One window of a clip, as scored: at most 10 s of mono 48 kHz audio."""

    index: int
    start_seconds: float
    end_seconds: float
    samples: np.ndarray = field(repr=False)


def find_audio_files(paths: Iterable[Path]) -> list[Path]:
    """Expand directories recursively (sorted, audio extensions only); keep files as given.

    A path that does not exist is kept, so the caller reports it as a failed file.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
            )
        else:
            found.append(path)
    return found


def open_sound_file(path: Path) -> Any:
    """Open an audio file with soundfile; SourceError naming the file and the reason."""
    import soundfile as sf

    if not path.exists():
        raise SourceError(f"{path}: no such file")
    if path.is_dir():
        raise SourceError(f"{path}: is a directory")
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
        raise SourceError(f"{path}: cannot decode ({err})") from err
    if handle.frames == 0 or handle.samplerate <= 0:
        handle.close()
        raise SourceError(f"{path}: contains no audio (0 samples)")
    return handle


def read_sound_file(path: Path) -> tuple[np.ndarray, int]:
    """All frames of an audio file as float32 (frames, channels) and its rate; SourceError
    naming the file and the reason when it cannot be used."""
    import soundfile as sf

    with open_sound_file(path) as handle:
        rate_hz = int(handle.samplerate)
        try:
            data = handle.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
            raise SourceError(f"{path}: cannot decode ({err})") from err
    if data.shape[0] == 0:
        raise SourceError(f"{path}: contains no audio (0 samples)")
    return data, rate_hz


def write_pcm16(path: Path, samples: np.ndarray, rate_hz: int) -> None:
    """Write samples (float, -1..1) as a 16-bit PCM file whose format follows the suffix."""
    import soundfile as sf

    sf.write(str(path), samples, rate_hz, subtype="PCM_16")


# libsndfile's name and sample format of each clip format: 24-bit keeps what a microphone
# delivers (FLAC goes no higher); Vorbis is lossy and has no sample width.
_ENCODINGS = {"flac": ("FLAC", "PCM_24"), "wav": ("WAV", "PCM_24"), "ogg": ("OGG", "VORBIS")}


def encode_audio(handle: BinaryIO, frames: np.ndarray, rate_hz: int, fmt: str) -> None:
    """Encode (frames, channels) float audio as `fmt` (flac, wav, ogg) into an open binary
    file; OSError when libsndfile cannot write it (a full disk, say)."""
    import soundfile as sf

    container, subtype = _ENCODINGS[fmt]
    # Integer formats wrap out-of-range floats instead of clipping them; NaN has no code.
    safe = np.clip(np.nan_to_num(frames, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    try:
        sf.write(handle, safe, rate_hz, format=container, subtype=subtype)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise OSError(f"cannot encode {fmt}: {err}") from err


def load_clip(path: Path) -> Clip:
    """Decode any format libsndfile reads; SourceError with the reason when it cannot be used."""
    data, rate_hz = read_sound_file(path)
    bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise SourceError(f"{path}: {bad} of {data.size} samples are NaN or infinite")
    samples = resample_to(to_mono(data), rate_hz, MODEL_SAMPLE_RATE_HZ)
    return Clip(path, samples, rate_hz, int(data.shape[1]))


def clip_windows(
    samples: np.ndarray,
    window_seconds: float = MAX_WINDOW_SECONDS,
    hop_seconds: float | None = None,
    rate_hz: int = MODEL_SAMPLE_RATE_HZ,
) -> list[ClipWindow]:
    """Cut a clip into consecutive (hop = window) or overlapping windows, never a random crop.

    A clip no longer than one window is a single window (the extractor repeat-pads it). A
    tail that the regular hops do not reach gets a last window aligned to the clip's end.
    """
    if not 0 < window_seconds <= MAX_WINDOW_SECONDS:
        raise ValueError(f"window_seconds must be in (0, {MAX_WINDOW_SECONDS:g}]")
    hop = hop_seconds if hop_seconds is not None else window_seconds
    if hop <= 0:
        raise ValueError("hop_seconds must be positive")
    n = len(samples)
    size = round(window_seconds * rate_hz)
    step = max(1, round(hop * rate_hz))
    if n <= size:
        return [ClipWindow(0, 0.0, n / rate_hz, samples)]
    starts = list(range(0, n - size + 1, step))
    if starts[-1] + size < n:
        starts.append(n - size)
    return [
        ClipWindow(i, start / rate_hz, (start + size) / rate_hz, samples[start : start + size])
        for i, start in enumerate(starts)
    ]
