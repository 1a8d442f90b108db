"""The ISA table: compile targets, the CPU flags each needs, and what this CPU has. No TVM."""

from __future__ import annotations

import os
from pathlib import Path

# Target per ISA level. mcpu is explicit: TVM 0.27 rejects "native" and string targets.
ISA_TARGETS: dict[str, dict[str, object]] = {
    "avx512vnni": {"kind": "llvm", "mcpu": "cascadelake", "num-cores": 1},
    "avx512": {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 1},
    "avx2": {"kind": "llvm", "mcpu": "haswell", "num-cores": 1},
}
# CPU flags (from /proc/cpuinfo) each ISA module needs.
_AVX512 = frozenset(
    {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd", "avx2", "fma", "f16c"}
)
ISA_FLAGS: dict[str, frozenset[str]] = {
    "avx512vnni": _AVX512 | {"avx512_vnni"},
    "avx512": _AVX512,
    "avx2": frozenset({"avx2", "fma", "f16c"}),
}
ISA_PREFERENCE = ("avx512vnni", "avx512", "avx2")  # best first

# How each ISA level runs an int8 block (16 rows x 4 columns, one int32 of 4 weights per row):
#   vnni:     one vpdpbusd (u8 x s8, 4 products summed per int32 lane)
#   avx512bw: vpmaddubsw (u8 x s8, pairs summed into int16) then vpmaddwd by ones (pairs of int16
#             summed into int32): the VNNI emulation LPCNet uses; it cannot saturate because
#             quantize.quantize_rows bounds every weight pair by 128
#   avx2:     the same with 256-bit registers (two of each per block)
#   generic:  plain integer SIMD that LLVM vectorises for any CPU (host fallback)
# All are exact integer sums, so every ISA level produces the same samples. (The earlier avx2 path,
# sign-extend to int16 then vpmaddwd, took twice the instructions per block.)
INT8_VARIANT = {"avx512vnni": "vnni", "avx512": "avx512bw", "avx2": "avx2"}


def cpu_flags() -> frozenset[str]:
    """CPU feature flags of this machine (from /proc/cpuinfo; empty where it does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def host_isas() -> list[str]:
    """ISA levels this machine can run, best first."""
    flags = cpu_flags()
    return [isa for isa in ISA_PREFERENCE if ISA_FLAGS[isa] <= flags]


def host_target() -> dict[str, object]:
    """A conservative target for CPUs none of the shipped modules fit (any x86-64 / aarch64)."""
    machine = os.uname().machine
    if machine in ("x86_64", "amd64"):
        return {"kind": "llvm", "mcpu": "x86-64", "num-cores": 1}
    return {"kind": "llvm", "num-cores": 1}
