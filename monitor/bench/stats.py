"""Bench statistics: per-window summaries, latency percentiles and this process's memory."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Summary:
    """Median, min and max of per-window values."""

    median: float
    min: float
    max: float


@dataclass(frozen=True)
class Percentiles:
    """The 50th and 99th percentiles and the maximum of per-window values."""

    p50: float
    p99: float
    max: float


def summary(values: Sequence[float]) -> Summary | None:
    """Median, min and max of per-window values (None when there are none)."""
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return Summary(float(np.median(array)), float(array.min()), float(array.max()))


def percentiles(values: Sequence[float]) -> Percentiles | None:
    """p50, p99 and max of per-window values (None when there are none)."""
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return Percentiles(
        float(np.percentile(array, 50)), float(np.percentile(array, 99)), float(array.max())
    )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is unknown or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


@dataclass(frozen=True)
class MemoryMib:
    """This process's memory in MiB: rss (now), peak (high-water mark), anon and file (the
    resident anonymous and file-backed parts: memory-mapped weights count as file)."""

    rss: float | None
    peak: float | None
    anon: float | None
    file: float | None


def memory_mib() -> MemoryMib:
    """This process's memory now, from /proc (else only the peak, from getrusage)."""
    try:
        text = Path("/proc/self/status").read_text(encoding="ascii")
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

        def mib(name: str) -> float | None:
            return int(fields[name].split()[0]) / 1024 if name in fields else None

        return MemoryMib(mib("VmRSS"), mib("VmHWM"), mib("RssAnon"), mib("RssFile"))
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Linux reports kilobytes, macOS bytes.
        scale = 1024 * 1024 if sys.platform == "darwin" else 1024
        return MemoryMib(None, peak / scale, None, None)


def reset_peak_rss() -> bool:
    """Start this process's peak RSS (VmHWM) afresh, so a peak read later is one run's; False
    where the kernel does not allow it (not Linux, or /proc read-only)."""
    try:
        # "5" resets only the high-water mark (Linux >= 4.0); it touches no page.
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class SteadyMemory:
    """The memory of a warm path: the largest RSS sampled after a window, and the peak."""

    steady: float | None
    anon: float | None
    file: float | None
    peak: float | None


class SteadySampler:
    """RSS sampled right after each window once warm; steady = the largest such sample.

    Right after a window every weight page has just been touched, so the sample does not
    depend on the kernel reclaiming cold file-backed pages between windows (some VMs run
    DAMON page-out), nor on when the sample happens to fall.
    """

    def __init__(self) -> None:
        self.samples: list[MemoryMib] = []

    def after_window(self) -> None:
        self.samples.append(memory_mib())

    def result(self) -> SteadyMemory:
        warm = self.samples[1:] or self.samples
        best = max(warm, key=lambda m: m.rss or 0.0) if warm else memory_mib()
        # The kernel updates the high-water mark lazily: never report it below a sample.
        peaks = [m.rss for m in self.samples] + [memory_mib().peak]
        known = [p for p in peaks if p is not None]
        return SteadyMemory(best.rss, best.anon, best.file, max(known) if known else None)
