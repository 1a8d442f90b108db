"""TIR expression builders shared by the frame and condition kernels: fused multiply-add and the
fast tanh and exp2 polynomials of models/vocoder/reference.py, written once as expression trees."""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm.script import tirx as T

from models.vocoder.fastmath import EXP2_POLY, TANH_ALPHA, TANH_BETA


def fma(a: tvm.tirx.PrimExpr, b: tvm.tirx.PrimExpr, c: tvm.tirx.PrimExpr) -> tvm.tirx.PrimExpr:
    """a * b + c rounded once (models.vocoder.fastmath.fma32), vectorised like any elementwise op.

    Written out rather than left to LLVM's contraction of `a * b + c`: where both operands of an
    add are products, or an ISA has no FMA, LLVM's choice decides the last bit, and a last-bit
    difference that meets an 8-bit rounding edge moves a quantised activation (h off by ~2e-3).
    With every fused step explicit, the kernel's h is the reference's bit for bit.
    """
    return T.call_llvm_pure_intrin("float32", "llvm.fma.f32", a, b, c)


def multiply_add(
    fused: bool,
) -> Callable[[tvm.tirx.PrimExpr, tvm.tirx.PrimExpr, tvm.tirx.PrimExpr], tvm.tirx.PrimExpr]:
    """`fma` for the shipped ISA levels (all have FMA hardware). The host fallback (any x86-64)
    gets a plain a * b + c instead: on a CPU without FMA, llvm.fma is a libm call per element,
    which measured 70 us/sample for the shipped voice, beyond the 40 us budget. There LLVM rounds
    the product and the sum separately, so the fallback is the reference only to float rounding
    (the samples of tests/models/test_runtime.py still agree)."""
    return fma if fused else lambda a, b, c: a * b + c


def tanh_rational(
    x: tvm.tirx.PrimExpr, x2: tvm.tirx.PrimExpr, mad: Callable = fma
) -> tvm.tirx.PrimExpr:
    """fast_tanh's rational P(x2) * x / Q(x2) on an already clamped x, with x2 = x * x.

    A plain Python builder, called from the TVMScript below: the expression tree (Horner steps as
    FMAs, as models.vocoder.fastmath._tanh_rational) is written once for the GRU gates and the
    conditioning net.
    """
    p = T.float32(float(TANH_ALPHA[0]))
    for c in TANH_ALPHA[1:]:
        p = mad(p, x2, T.float32(float(c)))
    q = T.float32(float(TANH_BETA[0]))
    for c in TANH_BETA[1:]:
        q = mad(q, x2, T.float32(float(c)))
    return p * x / q


def exp2_poly(f: tvm.tirx.PrimExpr, mad: Callable = fma) -> tvm.tirx.PrimExpr:
    """2^f on [0, 1) (models.vocoder.fastmath.fast_exp's polynomial), Horner steps as FMAs."""
    p = T.float32(float(EXP2_POLY[-1]))
    for c in reversed(EXP2_POLY[:-1]):
        p = mad(p, f, T.float32(float(c)))
    return p
