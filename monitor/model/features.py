"""CLAP's log-mel input features (the checkpoint extractor's computation) in numpy; no torch."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from monitor.frames import Position

logger = logging.getLogger(__name__)

# power_to_db as ClapFeatureExtractor calls it: reference 1.0, floor 1e-10 (= -100 dB).
MEL_FLOOR = 1e-10
PADDINGS = ("repeatpad", "repeat", "pad")
# Samples at either end of a window whose values belong to that window rather than to the
# stream: each window is resampled on its own, and resample_poly assumes zeros outside it (its
# filter reaches 10 input samples: 60 output samples from 8 kHz, 480 from 1 kHz), and the
# resampled length is rounded by one sample at the end. A frame whose support comes this close
# to an edge is computed for its window and never shared with another window.
EDGE_MARGIN_SAMPLES = 2048
MAX_CACHED_STREAMS = 64  # one cache per source; beyond this the least recently used goes

Positions = Sequence[Position]


@dataclass(frozen=True)
class MelSettings:
    """The feature extractor settings the computation depends on (preprocessor config names)."""

    sample_rate_hz: int = 48000
    max_samples: int = 480000
    fft_size: int = 1024
    hop_length: int = 480
    mel_bins: int = 64
    frequency_min_hz: float = 50.0
    frequency_max_hz: float = 14000.0
    padding: str = "repeatpad"

    def __post_init__(self) -> None:
        if self.padding not in PADDINGS:
            raise ValueError(f"padding {self.padding!r} is not one of {', '.join(PADDINGS)}")

    @classmethod
    def from_extractor(cls, settings: Mapping[str, Any]) -> MelSettings:
        """From a ClapFeatureExtractor's to_dict() (or its preprocessor config).

        ValueError for the fusion extractor: it stacks four crops, which these features do not.
        Its top_db is stored but never applied by the extractor, so it is not applied here.
        """
        if settings.get("truncation") == "fusion":
            raise ValueError("the fusion feature extractor (4 stacked crops) is not supported")
        padding = settings.get("padding", "repeatpad")
        rate = int(settings["sampling_rate"])
        return cls(
            sample_rate_hz=rate,
            max_samples=int(settings.get("nb_max_samples", int(settings["max_length_s"]) * rate)),
            fft_size=int(settings["fft_window_size"]),
            hop_length=int(settings["hop_length"]),
            mel_bins=int(settings["feature_size"]),
            frequency_min_hz=float(settings["frequency_min"]),
            frequency_max_hz=float(settings["frequency_max"]),
            padding="repeatpad" if padding is True else str(padding),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MelSettings:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def frames(self) -> int:
        """Frames of a full window: centred STFT, one frame per hop plus one."""
        return self.max_samples // self.hop_length + 1


def _hertz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (as librosa and transformers)."""
    mels = 3.0 * freq / 200.0
    log_region = freq >= 1000.0
    mels[log_region] = 15.0 + np.log(freq[log_region] / 1000.0) * (27.0 / np.log(6.4))
    out: np.ndarray = mels
    return out


def _mel_to_hertz(mels: np.ndarray) -> np.ndarray:
    freq = 200.0 * mels / 3.0
    log_region = mels >= 15.0
    freq[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mels[log_region] - 15.0))
    out: np.ndarray = freq
    return out


def slaney_mel_filters(settings: MelSettings) -> np.ndarray:
    """(fft_size // 2 + 1, mel_bins) float64: transformers' mel_filter_bank(norm="slaney",
    mel_scale="slaney") with the extractor's arguments, operation for operation."""
    bins = settings.fft_size // 2 + 1
    edges_mel = np.linspace(
        _hertz_to_mel(np.array([settings.frequency_min_hz]))[0],
        _hertz_to_mel(np.array([settings.frequency_max_hz]))[0],
        settings.mel_bins + 2,
    )
    edges_hz = _mel_to_hertz(edges_mel)
    fft_freqs = np.linspace(0, settings.sample_rate_hz // 2, bins)
    widths = np.diff(edges_hz)
    slopes = np.expand_dims(edges_hz, 0) - np.expand_dims(fft_freqs, 1)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters: np.ndarray = np.maximum(np.zeros(1), np.minimum(down, up))
    filters *= np.expand_dims(2.0 / (edges_hz[2 : settings.mel_bins + 2] - edges_hz[:-2]), 0)
    return filters


def hann_window(size: int) -> np.ndarray:
    """The periodic Hann window of transformers' window_function(size, "hann"), float64."""
    window: np.ndarray = np.hanning(size + 1)[:-1]
    return window


def check_window(
    index: int, window: np.ndarray, max_samples: int, sample_rate_hz: int
) -> np.ndarray:
    """The window as float32 mono samples; ValueError naming the window if it cannot be scored."""
    samples = np.asarray(window, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"window {index}: expected mono samples, got shape {samples.shape}")
    if samples.size == 0:
        raise ValueError(f"window {index}: no samples")
    if samples.size > max_samples:
        raise ValueError(
            f"window {index}: {samples.size} samples is longer than the model's "
            f"{max_samples} ({max_samples / sample_rate_hz:g} s at {sample_rate_hz} Hz)"
        )
    if not np.isfinite(samples).all():
        raise ValueError(f"window {index}: contains NaN or infinite samples")
    return samples


def pad_windows(windows: Sequence[np.ndarray], settings: MelSettings) -> np.ndarray:
    """(len(windows), max_samples) float64: each window padded as the extractor pads it.

    repeatpad repeats a short window a whole number of times, then pads with zeros; every
    window must already hold 1..max_samples samples (the extractor would crop a longer one
    at a random offset).
    """
    target = settings.max_samples
    out = np.zeros((len(windows), target), dtype=np.float64)
    for row, window in zip(out, windows, strict=True):
        samples = np.asarray(window).reshape(-1)
        if not 0 < samples.size <= target:
            raise ValueError(f"a window must hold 1..{target} samples, got {samples.size}")
        if settings.padding == "pad" or samples.size == target:
            row[: samples.size] = samples
            continue
        repeats = target // samples.size
        if settings.padding == "repeat":
            repeats += 1
        tiled = np.tile(samples, repeats)[:target]
        row[: tiled.size] = tiled
    return out


def frame_segment(samples: np.ndarray, start: int, stop: int, settings: MelSettings) -> np.ndarray:
    """float64 samples under frames start..stop-1 of a full window's centred STFT.

    Frame f covers [f * hop - fft_size / 2, f * hop + fft_size / 2) of the window, reflected
    at the window's ends as the centred STFT pads it (numpy's "reflect": the edge sample is
    not repeated). Frames can then be taken every hop from the segment, with no centring.
    """
    half = settings.fft_size // 2
    first = start * settings.hop_length - half
    end = (stop - 1) * settings.hop_length + half
    size = samples.shape[-1]
    if first >= 0 and end <= size:
        return np.asarray(samples[first:end], dtype=np.float64)
    index = np.abs(np.arange(first, end))
    index = np.where(index >= size, 2 * (size - 1) - index, index)
    return np.asarray(samples[index], dtype=np.float64)


class FrameFeatures(Protocol):
    """A feature computation StreamingMel can cache: NumpyMelFeatures or TorchMelFeatures."""

    settings: MelSettings

    def __call__(self, windows: Sequence[np.ndarray]) -> Any: ...

    def frame_run(self, samples: np.ndarray, start: int, stop: int) -> np.ndarray: ...

    def as_output(self, features: np.ndarray) -> Any: ...


class NumpyMelFeatures:
    """The features in numpy (float64 STFT, as the reference): for processes without torch."""

    def __init__(self, settings: MelSettings) -> None:
        self.settings = settings
        self._window = hann_window(settings.fft_size)
        filters = slaney_mel_filters(settings)
        # FFT bins above the last filter carry no weight: dropping them shortens the matmul.
        self._used_bins = int(np.flatnonzero(filters.any(axis=1)).max()) + 1
        self._filters = np.ascontiguousarray(filters[: self._used_bins])

    def __call__(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """(len(windows), 1, frames, mel_bins) float32, as the extractor's input_features."""
        return self.from_padded(pad_windows(windows, self.settings))

    def from_padded(self, padded: np.ndarray) -> np.ndarray:
        s = self.settings
        half = s.fft_size // 2
        signal = np.pad(np.asarray(padded, dtype=np.float64), ((0, 0), (half, half)), "reflect")
        frames = np.lib.stride_tricks.sliding_window_view(signal, s.fft_size, axis=-1)
        return self._log_mel(frames[:, :: s.hop_length])[:, None]

    def frame_run(self, samples: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Frames start..stop-1 of one full-length window: (stop - start, mel_bins) float32,
        equal to the same rows of the whole window's features."""
        s = self.settings
        segment = frame_segment(samples, start, stop, s)
        frames = np.lib.stride_tricks.sliding_window_view(segment, s.fft_size)[:: s.hop_length]
        return self._log_mel(frames)

    def as_output(self, features: np.ndarray) -> np.ndarray:
        """(batch, 1, frames, mel_bins) float32 features in this class's output type."""
        return features

    def _log_mel(self, frames: np.ndarray) -> np.ndarray:
        """(..., fft_size) float64 frames -> (..., mel_bins) float32 decibels."""
        spectrum = np.fft.rfft(frames * self._window, axis=-1)
        power = (
            spectrum.real[..., : self._used_bins] ** 2 + spectrum.imag[..., : self._used_bins] ** 2
        )
        mel = np.maximum(power @ self._filters, MEL_FLOOR)
        out: np.ndarray = (10.0 * np.log10(mel)).astype(np.float32)
        return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of True in a 1-D boolean array."""
    bounds = np.flatnonzero(np.diff(np.concatenate(([False], mask, [False])).astype(np.int8)))
    return list(zip(bounds[::2].tolist(), bounds[1::2].tolist(), strict=True))


class StreamingMel:
    """Features of overlapping windows of one stream, each interior frame computed once.

    A full-length window starting at stream sample p (model rate), p a multiple of
    hop_length, has frame f at global frame p / hop_length + f. Away from the window's edges
    (EDGE_MARGIN_SAMPLES) a frame depends only on stream samples, so it is kept in a ring of
    capacity_frames slots keyed by global frame and reused by the next windows; the frames
    near either edge see the centred STFT's reflect padding and the window's own resampling,
    so they are always computed. With a one-second hop a window then computes about a tenth
    of its frames. A shorter window (the config's default is 5 s) is repeated to max_samples
    by the extractor's padding: each copy's interior frames are the stream's too, so it is
    served the same way when its length is a whole number of hops. Windows with no position
    or a position off the frame grid are computed in full and not kept.

    Each stream has its own cache: a position is a stream's sample index (the one default
    stream) or (stream key, index), so windows of several sources can share a batch without
    ever reusing each other's frames. Within a stream, a position at or before the previous
    one is taken as a new stream (a reopened source) and empties its cache (reset() empties
    all of them).
    """

    def __init__(
        self,
        features: FrameFeatures,
        *,
        capacity_frames: int | None = None,
        margin_samples: int = EDGE_MARGIN_SAMPLES,
        max_streams: int = MAX_CACHED_STREAMS,
    ) -> None:
        s = features.settings
        self.features = features
        self.settings = s
        # Two windows' worth: the previous window's frames survive while the next is stored.
        self.capacity_frames = 2 * s.frames if capacity_frames is None else capacity_frames
        if self.capacity_frames < s.frames:
            # A window's own frames must never evict each other within one store.
            raise ValueError(f"capacity_frames must be at least {s.frames} (one window)")
        self.margin_samples = margin_samples
        self.max_streams = max_streams
        self._centres = np.arange(s.frames, dtype=np.int64) * s.hop_length
        # Insertion order = least recently used first (bounded memory whatever the callers).
        self._streams: dict[str, _StreamCache] = {}
        # Audio may be embedded from several threads; the caches are shared state.
        self._lock = threading.Lock()
        self.frames_computed = 0
        self.frames_reused = 0

    @property
    def cached_frames(self) -> int:
        """Frames held in the caches now (at most capacity_frames per stream)."""
        return sum(int(np.count_nonzero(c.keys >= 0)) for c in self._streams.values())

    def reset(self) -> None:
        """Forget every cached frame of every stream."""
        with self._lock:
            self._streams.clear()

    def __call__(self, windows: Sequence[np.ndarray], positions: Positions | None = None) -> Any:
        """(len(windows), 1, frames, mel_bins) float32 in the wrapped class's output type.

        positions: each window's first sample as an absolute index at the model's rate in its
        stream, optionally with the stream's key, or None; without any, exactly the wrapped
        computation.
        """
        if positions is None or all(p is None for p in positions):
            return self.features(windows)
        if len(positions) != len(windows):
            raise ValueError(f"{len(positions)} positions for {len(windows)} windows")
        s = self.settings
        out = np.empty((len(windows), 1, s.frames, s.mel_bins), dtype=np.float32)
        with self._lock:
            for row, (window, position) in enumerate(zip(windows, positions, strict=True)):
                out[row, 0] = self._window(np.asarray(window).reshape(-1), position)
        return self.features.as_output(out)

    def _cache(self, stream: str) -> _StreamCache:
        cache = self._streams.pop(stream, None)
        if cache is None:
            if len(self._streams) >= self.max_streams:
                del self._streams[next(iter(self._streams))]
            cache = _StreamCache(self.capacity_frames, self.settings.mel_bins)
        self._streams[stream] = cache
        return cache

    def _frame_keys(self, size: int, position: int) -> np.ndarray:
        """The stream frame of each of the padded window's frames, or -1 for a frame that
        belongs to this window alone.

        A full window is one copy of the stream; a shorter one is repeated (repeatpad,
        repeat) or zero-padded (pad) to max_samples, and a frame lying wholly inside one copy
        of the samples, the margin away from that copy's ends, is the stream's frame at the
        same place in the window. With copies starting off the frame grid (a length that is
        not a whole number of hops) no frame is.
        """
        s = self.settings
        keys = np.full(s.frames, -1, dtype=np.int64)
        if size % s.hop_length:
            return keys
        repeats = 1 if s.padding == "pad" else s.max_samples // size
        if s.padding == "repeat" and size < s.max_samples:
            repeats += 1
        tiled = min(repeats * size, s.max_samples)
        copy = self._centres // size
        local = self._centres - copy * size
        reach = s.fft_size // 2 + self.margin_samples
        copy_end = np.minimum((copy + 1) * size, tiled)
        inside = (local >= reach) & (self._centres + reach <= copy_end)
        keys[inside] = position // s.hop_length + local[inside] // s.hop_length
        return keys

    def _window(self, samples: np.ndarray, where: Position) -> np.ndarray:
        s = self.settings
        stream, position = ("", where) if where is None or isinstance(where, int) else where
        if position is None:
            cache = None
        else:
            if position < 0:
                raise ValueError(f"a window position must be >= 0, got {position}")
            cache = self._cache(stream)
            if cache.last_position is not None and position <= cache.last_position:
                logger.debug(
                    "window position %d is not after %d: new stream", position, cache.last_position
                )
                cache.clear()
            cache.last_position = position
        padded = samples if samples.size == s.max_samples else pad_windows([samples], s)[0]
        if cache is None or position is None or position % s.hop_length:
            self.frames_computed += s.frames
            return self.features.frame_run(padded, 0, s.frames)
        keys = self._frame_keys(samples.size, position)
        keyed = keys >= 0
        slots = keys % self.capacity_frames
        result = np.empty((s.frames, s.mel_bins), dtype=np.float32)
        hit = keyed & (cache.keys[slots] == keys)
        result[hit] = cache.values[slots[hit]]
        needed = ~hit
        # A repeated window holds each of its frames once per copy: compute the first only.
        first_of_key = np.zeros(s.frames, dtype=bool)
        first_of_key[np.unique(keys, return_index=True)[1]] = True
        repeated = keyed & needed & ~first_of_key
        needed &= ~repeated
        # One STFT per run of missing frames; edge frames join the run next to them.
        for first, end in _runs(needed):
            result[first:end] = self.features.frame_run(padded, first, end)
            self.frames_computed += end - first
            kept = np.arange(first, end)[keyed[first:end]]
            cache.keys[slots[kept]] = keys[kept]
            cache.values[slots[kept]] = result[kept]
        # Their first copies are in the ring now (a window's keys never evict each other).
        result[repeated] = cache.values[slots[repeated]]
        self.frames_reused += int(np.count_nonzero(hit) + np.count_nonzero(repeated))
        return result


class _StreamCache:
    """One stream's frames: a ring of slots keyed by global frame index (-1 = empty)."""

    def __init__(self, capacity_frames: int, mel_bins: int) -> None:
        self.keys = np.full(capacity_frames, -1, dtype=np.int64)
        self.values = np.zeros((capacity_frames, mel_bins), dtype=np.float32)
        self.last_position: int | None = None

    def clear(self) -> None:
        self.keys.fill(-1)
        self.last_position = None
