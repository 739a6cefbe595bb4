"""Which CPU a figure comes from: its model name and the vector extensions that decide speed."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

# The extensions that change which kernels torch, oneDNN and ONNX Runtime can use.
X86_ISA = (
    "avx2",
    "fma",
    "avx_vnni",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
)
# aarch64 names: asimd is NEON; asimddp the int8 dot product; bf16 and i8mm matrix extensions.
ARM_ISA = {"asimd": "neon", "asimddp": "dotprod", "bf16": "bf16", "i8mm": "i8mm", "sve": "sve"}
ARM_PARTS = {
    "0xd0b": "Cortex-A76",
    "0xd08": "Cortex-A72",
    "0xd03": "Cortex-A53",
    "0xd05": "Cortex-A55",
}


@dataclass(frozen=True)
class CpuInfo:
    """The CPU model as the kernel names it and the speed-relevant extensions it has."""

    model: str
    isa: tuple[str, ...]  # in X86_ISA / ARM_ISA order; empty when unknown

    @property
    def native_bf16(self) -> bool:
        """Whether bf16 matrix products run in hardware (else they are emulated: slower)."""
        return any(flag in self.isa for flag in ("avx512_bf16", "amx_bf16", "bf16"))

    def describe(self) -> str:
        return f"{self.model} ({' '.join(self.isa) or 'no vector extension reported'})"


def cpu_info(cpuinfo_text: str | None = None, machine: str | None = None) -> CpuInfo:
    """The CPU of this machine from /proc/cpuinfo (Linux); the platform's name elsewhere."""
    if cpuinfo_text is None:
        try:
            cpuinfo_text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo_text = ""
    fields: dict[str, str] = {}
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    arch = machine or platform.machine()
    if "flags" in fields:  # x86
        flags = set(fields["flags"].split())
        model = fields.get("model name") or platform.processor() or arch
        return CpuInfo(model, tuple(f for f in X86_ISA if f in flags))
    if "Features" in fields:  # aarch64
        features = set(fields["Features"].split())
        part = ARM_PARTS.get(fields.get("CPU part", "").lower())
        board = fields.get("Model")
        model = " ".join(p for p in (board, part and f"({part})") if p) or part or arch
        return CpuInfo(model, tuple(name for flag, name in ARM_ISA.items() if flag in features))
    return CpuInfo(platform.processor() or arch, ())
