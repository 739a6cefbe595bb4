"""Process-wide CPU settings for inference: numpy's BLAS pool and glibc's allocator."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
from pathlib import Path

logger = logging.getLogger(__name__)

# OpenBLAS builds in the wheels that may be loaded: numpy's (64-bit ints, prefixed), scipy's,
# and a plain system one.
_BLAS_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


def _loaded_blas_libraries() -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process (Linux; empty elsewhere)."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    paths = {match.group(0) for match in re.finditer(r"/\S*openblas\S*\.so[\w.]*", maps)}
    return sorted(paths)


def limit_blas_threads(threads: int = 1) -> int:
    """Cap numpy's BLAS pool at `threads`; returns how many libraries were capped.

    After a matmul OpenBLAS keeps its workers spinning for a while, which slows the next
    torch or ONNX Runtime call 1.5-2x on a small CPU; the features need no BLAS parallelism.
    Calls the setter of every OpenBLAS already loaded (numpy's, scipy's) through ctypes:
    the environment variables are read only when a library loads, which has happened.
    """
    capped = 0
    for path in _loaded_blas_libraries():
        try:
            library = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
        except OSError:
            continue
        for name in _BLAS_SETTERS:
            setter = getattr(library, name, None)
            if setter is not None:
                setter.argtypes = [ctypes.c_int]
                setter(threads)
                capped += 1
                break
    if capped == 0:
        logger.debug("no OpenBLAS library found to limit to %d thread(s)", threads)
    return capped


# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2).
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 256 << 20


def keep_freed_memory() -> bool:
    """Make glibc reuse freed blocks of up to 32 MB instead of handing them back to the kernel.

    Every window allocates the same large temporaries (spectra, activations of a few MB). By
    default glibc maps each one freshly and unmaps it when freed, so every window pays for
    hundreds of thousands of page faults, which slow both the features and the audio tower;
    kept, the blocks leave peak RSS unchanged. Setting the thresholds also stops glibc's own
    adjustment of them. Returns
    False where there is no glibc (musl, macOS): nothing changes there.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        logger.debug("no mallopt in the C library %s: allocator left as it is", name)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mapped = int(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    trimmed = int(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return mapped == 1 and trimmed == 1


def prepare_for_inference() -> None:
    """What every process that runs the model does once: one BLAS thread, freed memory kept."""
    limit_blas_threads(1)
    keep_freed_memory()
