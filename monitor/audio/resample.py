"""Polyphase resampling as float32 matrix products with exactly scipy's resample_poly filter."""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np

# Outputs per matrix row at least this many: a rate pair with few outputs per block (16 kHz
# -> 48 kHz is 3 per input sample) is grouped so that each product is wide enough for BLAS.
MIN_ROW_OUTPUTS = 96
# Outputs per product: a row's outputs each use only ~20 of its inputs, so the matrix is mostly
# zeros; products over 32 outputs at a time skip most of the zero rows.
BAND_OUTPUTS = 32
# Rows per product: bounds the strided copy numpy makes for BLAS (a 1 h file is ~1M rows).
CHUNK_ROWS = 4096
# Beyond this many matrix entries (odd rate pairs such as 48000 -> 96006, whose blocks are
# thousands of samples long) the dense product loses to resample_poly, which is used instead.
MAX_MATRIX_ENTRIES = 1 << 20
MODEL_SAMPLE_RATE_HZ = 48_000  # CLAP's input rate
KAISER_BETA = 5.0  # resample_poly's default window, ("kaiser", 5.0)
HALF_LENGTH_PER_RATE = 10  # resample_poly's filter half-length: 10 * max(up, down) taps


def _reduced(up: int, down: int) -> tuple[int, int]:
    common = gcd(up, down)
    return up // common, down // common


def _row_blocks(up: int) -> int:
    """Blocks of `up` outputs per matrix row, so that a row has at least MIN_ROW_OUTPUTS."""
    return max(1, -(-MIN_ROW_OUTPUTS // up))


def lowpass_taps(count: int, cutoff: float) -> np.ndarray:
    """scipy.signal.firwin(count, cutoff, window=("kaiser", KAISER_BETA)), the filter that
    resample_poly designs, in numpy, so that a daemon never pays for importing scipy.signal.

    A windowed sinc with cutoff as a fraction of Nyquist, scaled to unit gain at DC.
    """
    offsets = np.arange(count) - 0.5 * (count - 1)
    taps: np.ndarray = cutoff * np.sinc(cutoff * offsets) * np.kaiser(count, KAISER_BETA)
    scaled: np.ndarray = taps / taps.sum()
    return scaled


class PolyphaseResampler:
    """Resamples by up/down with exactly resample_poly's anti-aliasing filter and alignment.

    resample_poly runs the filter one output at a time in float64; here each block of `up`
    outputs is one row of a matrix product with the `down` inputs it starts from, in float32
    through BLAS, band by band. Outputs agree with resample_poly to float32 rounding (about
    1e-7 of full scale).
    """

    def __init__(self, up: int, down: int) -> None:
        up, down = _reduced(up, down)
        self.up, self.down = up, down
        half_len = HALF_LENGTH_PER_RATE * max(up, down)
        taps = lowpass_taps(2 * half_len + 1, 1.0 / max(up, down)) * up
        # resample_poly pads the filter in front so that output 0 sits at its centre, and then
        # drops the first `skip` outputs; the same alignment here.
        pre_pad = down - half_len % down
        taps = np.concatenate((np.zeros(pre_pad), taps))
        skip = (half_len + pre_pad) // down
        group = _row_blocks(up)
        self._row_outputs = group * up
        self._row_step = group * down
        # Output r of a row (r + skip overall) takes input j (relative to the row's first
        # input) with weight taps[(r + skip) * down - j * up], where that index is in range.
        r = np.arange(self._row_outputs)[None, :]
        first = -(-((r + skip) * down - (len(taps) - 1)) // up)
        last = ((r + skip) * down) // up
        self._first_input = int(first.min())
        span = int(last.max()) - self._first_input + 1
        j = np.arange(self._first_input, self._first_input + span)[:, None]
        index = (r + skip) * down - j * up
        valid = (index >= 0) & (index < len(taps))
        weights = np.where(valid, taps[np.clip(index, 0, len(taps) - 1)], 0.0)
        self._span = span
        # Per band of outputs: (first output, end, first input, end, its nonzero block).
        self._bands: list[tuple[int, int, int, int, np.ndarray]] = []
        for out_start in range(0, self._row_outputs, BAND_OUTPUTS):
            out_end = min(out_start + BAND_OUTPUTS, self._row_outputs)
            used = np.flatnonzero(valid[:, out_start:out_end].any(axis=1))
            in_start, in_end = int(used.min()), int(used.max()) + 1
            block = weights[in_start:in_end, out_start:out_end]
            band = np.ascontiguousarray(block, dtype=np.float32)
            self._bands.append((out_start, out_end, in_start, in_end, band))

    @staticmethod
    def matrix_entries(up: int, down: int) -> int:
        """About how many entries the matrix for up/down has (to choose it or resample_poly)."""
        up, down = _reduced(up, down)
        group = _row_blocks(up)
        span = group * down + 2 * HALF_LENGTH_PER_RATE * max(up, down) // up + 2
        return span * group * up

    def output_length(self, samples: int) -> int:
        """resample_poly's output length: ceil(samples * up / down)."""
        return -(-samples * self.up // self.down)

    def __call__(self, mono: np.ndarray) -> np.ndarray:
        """Resample 1-D audio; returns float32 of output_length(len(mono)) samples."""
        samples = np.asarray(mono, dtype=np.float32).reshape(-1)
        wanted = self.output_length(samples.size)
        rows = -(-wanted // self._row_outputs)
        # Zeros before and after, as resample_poly assumes outside the signal.
        padded = np.zeros((rows - 1) * self._row_step + self._span, dtype=np.float32)
        start = -self._first_input  # > 0: the filter reaches back before the first sample
        if start < 0:
            samples, start = samples[-start:], 0
        stop = min(samples.size, padded.size - start)
        padded[start : start + stop] = samples[:stop]
        windows = np.lib.stride_tricks.sliding_window_view(padded, self._span)[:: self._row_step]
        out = np.empty((rows, self._row_outputs), dtype=np.float32)
        for begin in range(0, rows, CHUNK_ROWS):
            end = min(begin + CHUNK_ROWS, rows)
            for out_start, out_end, in_start, in_end, band in self._bands:
                out[begin:end, out_start:out_end] = windows[begin:end, in_start:in_end] @ band
        return out.reshape(-1)[:wanted]


class _ScipyResampler:
    """resample_poly itself, for rate pairs whose matrix would be too large (or equal rates)."""

    def __init__(self, up: int, down: int) -> None:
        self.up, self.down = up, down

    def __call__(self, mono: np.ndarray) -> np.ndarray:
        from scipy.signal import resample_poly

        if self.up == self.down:
            return np.array(mono, dtype=np.float32)
        out: np.ndarray = resample_poly(mono, self.up, self.down).astype(np.float32, copy=False)
        return out


@lru_cache(maxsize=16)
def resampler(rate_hz: int, target_rate_hz: int) -> PolyphaseResampler | _ScipyResampler:
    """The resampler for one rate pair, built once (its matrix is at most a few MB)."""
    if rate_hz == target_rate_hz or (
        PolyphaseResampler.matrix_entries(target_rate_hz, rate_hz) > MAX_MATRIX_ENTRIES
    ):
        return _ScipyResampler(target_rate_hz, rate_hz)
    return PolyphaseResampler(target_rate_hz, rate_hz)


def stream_position(start_index: int, rate_hz: int, target_rate_hz: int) -> int | None:
    """Where a window starting at source sample `start_index` starts in the stream resampled
    to `target_rate_hz`; None unless that is a whole sample (the resampler's phase restarts
    at each window's first sample, so only then are its samples the stream's)."""
    position, remainder = divmod(start_index * target_rate_hz, rate_hz)
    return None if remainder else position


class StreamResampler:
    """Resamples the hop-spaced windows of one stream, computing only what a window adds.

    Consecutive windows overlap (10 s every second): away from a window's ends, its output
    samples are the stream's, the same in every window holding them, so they are taken from
    the previous window. The first and last `reach` outputs see the zeros resample_poly
    assumes outside the window and are computed for the window itself, as are windows that
    do not overlap the previous one or do not start on a whole output sample. The result
    equals resample_to on the window alone to float32 rounding.
    """

    def __init__(self, rate_hz: int, target_rate_hz: int) -> None:
        self.rate_hz, self.target_rate_hz = rate_hz, target_rate_hz
        self.up, self.down = _reduced(target_rate_hz, rate_hz)
        # Output samples whose filter reaches past a window's end (plus one for rounding).
        self.reach = -(-HALF_LENGTH_PER_RATE * max(self.up, self.down) // self.down) + 1
        self._previous: tuple[int, np.ndarray] | None = None
        self.samples_computed = 0  # output samples computed (the rest were reused)

    def __call__(self, mono: np.ndarray, start_index: int) -> np.ndarray:
        """Window `mono` (float32, starting at source sample `start_index`) at the target
        rate: round(len * target / source) samples, as resample_to gives them."""
        up, down, reach = self.up, self.down, self.reach
        size = mono.size
        if self.rate_hz == self.target_rate_hz:
            return mono.astype(np.float32, copy=False)
        aligned = (start_index * up) % down == 0 and (size * up) % down == 0
        engine = resampler(self.rate_hz, self.target_rate_hz)
        previous, self._previous = self._previous, None
        if not aligned or not isinstance(engine, PolyphaseResampler):
            self.samples_computed += round(size * up / down)
            return resample_to(mono, self.rate_hz, self.target_rate_hz)
        length, first = size * up // down, start_index * up // down
        reused_end = reach  # out[reach:reused_end] comes from the previous window
        if previous is not None and length > 2 * reach:
            before, samples = previous
            end = min(first + length - reach, before + samples.size - reach)
            if before <= first and first + reach < end:
                reused_end = end - first
        if reused_end == reach:
            out = engine(mono)[:length]
            self.samples_computed += length
        else:
            out = np.empty(length, dtype=np.float32)
            out[reach:reused_end] = samples[first + reach - before : first + reused_end - before]
            # The head: a prefix long enough that its own end cannot reach the first outputs.
            head = engine(mono[: min(size, -(-3 * reach * down // up))])
            out[:reach] = head[:reach]
            # The rest: a suffix starting on a whole output sample, `reach` before it is used.
            suffix_start = (max(0, reused_end - reach) * down // up) // down * down
            offset = suffix_start * up // down
            tail = engine(mono[suffix_start:])
            out[reused_end:] = tail[reused_end - offset : length - offset]
            self.samples_computed += head.size + tail.size
        self._previous = (first, out)
        return out


def resample_to(
    mono: np.ndarray, rate_hz: int, target_rate_hz: int = MODEL_SAMPLE_RATE_HZ
) -> np.ndarray:
    """Polyphase resampling to `target_rate_hz` with resample_poly's filter; the output has
    exactly round(n * ratio) samples."""
    if rate_hz == target_rate_hz:
        return mono.astype(np.float32, copy=False)
    out = resampler(rate_hz, target_rate_hz)(mono)
    expected = round(len(mono) * target_rate_hz / rate_hz)
    # resample_poly returns ceil(n * up / down): at most one sample to trim or pad.
    if len(out) > expected:
        out = out[:expected]
    elif len(out) < expected:
        out = np.pad(out, (0, expected - len(out)), mode="edge")
    return out
