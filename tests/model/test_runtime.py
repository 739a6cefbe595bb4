"""Process-wide inference settings: numpy's BLAS pool and glibc's allocator."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from monitor.model.runtime import limit_blas_threads


def _openblas_threads() -> list[int]:
    from monitor.model.runtime import _loaded_blas_libraries

    counts = []
    for path in _loaded_blas_libraries():
        library = ctypes.CDLL(path, mode=os.RTLD_NOLOAD)
        for name in ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads"):
            getter = getattr(library, name, None)
            if getter is not None:
                counts.append(int(getter()))
                break
    return counts


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="Linux only")
def test_blas_threads_are_limited() -> None:
    before = _openblas_threads()
    assert before, "numpy's OpenBLAS was not found among the loaded libraries"
    try:
        assert limit_blas_threads(1) == len(before)
        assert _openblas_threads() == [1] * len(before)
    finally:
        limit_blas_threads(max(before))


# A window's pattern: several large temporaries alive at once, then all freed; fifty times.
# Prints the minor page faults it cost.
_FAULTS = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from monitor.model.runtime import keep_freed_memory
    assert keep_freed_memory()
np.ones(1 << 20)  # numpy's own first allocations out of the way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    blocks = [np.ones(1 << 20) for _ in range(4)]  # 4 x 8 MB
    del blocks
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip())


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    default, kept = _faults("default"), _faults("keep")
    print(f"minor faults for 50 x 4 x 8 MB: default {default}, kept {kept}")
    assert default > 50 * 1000  # 8 MB freshly mapped or grown back is ~2048 page faults
    assert kept < default / 10


def _unit_environment() -> dict[str, str]:
    """The Environment= assignments of the shipped systemd unit."""
    from pathlib import Path

    unit = Path(__file__).resolve().parents[2] / "systemd" / "audio-monitor.service"
    found: dict[str, str] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        if line.startswith("Environment="):
            for assignment in line.removeprefix("Environment=").split():
                name, _, value = assignment.partition("=")
                found[name] = value
    return found


@pytest.mark.slow
def test_the_service_environment_leaves_torch_all_its_threads() -> None:
    unit = _unit_environment()
    assert unit.get("OPENBLAS_NUM_THREADS") == "1"  # numpy's pool stays out of torch's way
    script = "import torch; print(torch.get_num_threads())"
    plain = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    counts = [
        subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.strip()
        for env in (plain, {**plain, **{k: v for k, v in unit.items() if "THREADS" in k}})
    ]
    # MKL_NUM_THREADS=1 or OMP_NUM_THREADS=1 in the unit would make this 1 on any multi-core box.
    assert counts[0] == counts[1]
