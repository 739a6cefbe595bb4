"""The machine the bench ran on: CPU model and extensions, threads, versions, load averages."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

from monitor.bench.results import Environment
from monitor.bench.stats import memory_mib
from monitor.model.cpu import cpu_info

VERSIONED_PACKAGES = ("torch", "transformers", "onnxruntime", "numpy")


def versions() -> dict[str, str | None]:
    """The installed version of each package that decides the timings (None: not installed)."""
    out: dict[str, str | None] = {}
    for package in VERSIONED_PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def load_average() -> tuple[float, ...] | None:
    """The 1, 5 and 15 minute load averages, rounded (None where the platform has none)."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return None


def environment(threads: int, load_before: tuple[float, ...] | None) -> Environment:
    """The machine and versions now; `threads` is --threads, reported when torch is not loaded."""
    torch_threads: int | None = threads or None
    if "torch" in sys.modules:  # only asked, never imported here
        torch_threads = int(sys.modules["torch"].get_num_threads())
    cpu = cpu_info()
    return Environment(
        cpu_count=os.cpu_count(),
        cpu_model=cpu.model,
        cpu_isa=cpu.isa,
        torch_threads=torch_threads,
        python=platform.python_version(),
        platform=platform.platform(),
        versions=versions(),
        bench_peak_rss_mib=memory_mib().peak,
        load_average_before=load_before,
        load_average_after=load_average(),
    )
