"""The CPU a figure comes from: model name and extensions, on x86 and on a Raspberry Pi 5."""

from __future__ import annotations

from monitor.model.cpu import cpu_info

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor @ 2.80GHz
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni
processor\t: 1
model name\t: Intel(R) Xeon(R) Processor @ 2.80GHz
"""
ZEN5 = "model name\t: AMD Ryzen 9 9950X\nflags\t: avx2 fma avx512f avx512_vnni avx512_bf16\n"
N100 = "model name\t: Intel(R) N100\nflags\t: avx2 fma avx_vnni\n"
PI5 = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimddp
CPU part\t: 0xd0b

Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""


def test_x86_names_its_model_and_the_extensions_that_decide_kernels() -> None:
    xeon = cpu_info(XEON, "x86_64")
    assert xeon.model == "Intel(R) Xeon(R) Processor @ 2.80GHz"
    assert xeon.isa == ("avx2", "fma", "avx512f", "avx512_vnni")
    assert not xeon.native_bf16
    assert cpu_info(ZEN5, "x86_64").native_bf16
    n100 = cpu_info(N100, "x86_64")
    assert n100.isa == ("avx2", "fma", "avx_vnni") and "avx512f" not in n100.isa
    assert n100.describe() == "Intel(R) N100 (avx2 fma avx_vnni)"


def test_a_raspberry_pi_5_is_named_by_board_and_core() -> None:
    pi = cpu_info(PI5, "aarch64")
    assert pi.model == "Raspberry Pi 5 Model B Rev 1.0 (Cortex-A76)"
    assert pi.isa == ("neon", "dotprod") and not pi.native_bf16


def test_an_unknown_layout_still_gives_a_name() -> None:
    other = cpu_info("", "riscv64")
    assert other.model and other.isa == ()
