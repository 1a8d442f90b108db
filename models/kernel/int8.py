"""The int8 block-sparse matvec of the frame kernel, per ISA level, as TVMScript macros.

How each ISA level runs an int8 block (16 rows x 4 columns, one int32 of 4 weights per row) is
models/kernel/isa.py's INT8_VARIANT; all are exact integer sums, so every level computes the
same samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tvm.script import tirx as T


def int8_macros(variant: str, R: int, V: int, mad: Callable[..., Any]) -> tuple[Any, Any]:
    """(q_matvec, quantize4) for an ISA `variant` ("vnni", "avx512bw", "avx2", "generic"),
    R rows per block, V lanes for elementwise loops, `mad` the multiply-add (tir_math).

    Long for the frame kernel's reason (models/kernel/frame.py): TVMScript macros close over the
    constants given here, so they stay in one factory."""
    # vpdpbusd accumulates in place (a 4-5 cycle chain), so VNNI wants 4 accumulator sets; the
    # vpmaddubsw paths end each block in a 1-cycle vpaddd, where one set measured fastest
    # (AVX2 Zen 3, whole kernel: 1 set 3.10 us/sample, 2 sets 3.39, 4 sets 3.60).
    QACC = 4 if variant == "vnni" else 1
    dot4 = dot4_macro(variant, R)

    @T.macro
    def q_matvec(data, idx, ptr, xq, n_block_rows, scale, corr, xscale, bias, y, acc, relu):
        # y = W x + bias (ReLU if relu), W block-sparse int8: data[j, r] packs the 4 int8 weights of
        # row r in block j, xq[k] packs the 4 uint8 inputs (value + 128) of columns 4k..4k+3;
        # integer accumulation is exact, the +128 offset is removed with corr = 128 * row sum.
        for br in range(n_block_rows):
            if QACC == 1:
                for r in T.vectorized(R):
                    acc[0, r] = 0
                for j in range(ptr[br], ptr[br + 1]):
                    dot4(acc, 0, data, j, xq, idx[j])
                for r in T.vectorized(R):
                    acc[1, r] = acc[0, r] - corr[br * R + r]
            else:
                for a in T.unroll(QACC):
                    for r in T.vectorized(R):
                        acc[a, r] = 0
                for jj in range((ptr[br + 1] - ptr[br]) // QACC):
                    for a in T.unroll(QACC):
                        dot4(
                            acc, a, data, ptr[br] + jj * QACC + a, xq, idx[ptr[br] + jj * QACC + a]
                        )
                for j in T.serial(ptr[br] + (ptr[br + 1] - ptr[br]) // QACC * QACC, ptr[br + 1]):
                    dot4(acc, 0, data, j, xq, idx[j])
                for r in T.vectorized(R):
                    acc[1, r] = (acc[0, r] + acc[1, r]) + (acc[2, r] + acc[3, r]) - corr[br * R + r]
            for r in T.vectorized(R):
                if relu:
                    y[br * R + r] = T.max(
                        mad(
                            T.Cast("float32", acc[1, r]),
                            scale[br * R + r] * xscale,
                            bias[br * R + r],
                        ),
                        T.float32(0),
                    )
                else:
                    y[br * R + r] = mad(
                        T.Cast("float32", acc[1, r]), scale[br * R + r] * xscale, bias[br * R + r]
                    )

    @T.macro
    def quantize4(x, n, scale, xq8):
        # inputs: floor(x[i] * scale + 0.5) + 128 (as models.vocoder.reference rounds), stored as
        # contiguous bytes; the matvec reads them 4 at a time through an int32 view of the same
        # memory, the u8 operand of vpdpbusd / vpmaddubsw. (Packing the 4 bytes with shifts from
        # stride-4 loads cost ~0.5 us/sample on AVX2.)
        for io in range(n // V):
            for ii in T.vectorized(V):
                xq8[io * V + ii] = T.Cast(
                    "uint8",
                    T.Cast("int32", T.floor(mad(x[io * V + ii], scale, T.float32(0.5)))) + 128,
                )

    return q_matvec, quantize4


def dot4_macro(variant: str, R: int) -> Any:
    """dot4(acc, a, data, j, xq, k): acc[a, :] += int8 block j times the 4 uint8 inputs xq[k, 0],
    as the ISA `variant` does it (INT8_VARIANT in models/kernel/isa.py)."""

    @T.macro
    def dot4(acc, a, data, j, xq, k):
        # acc[a, :] += the 4-column int8 block j times the uint8 inputs of column group k
        if variant == "vnni":
            acc[a, T.ramp(0, 1, R)] = T.call_llvm_pure_intrin(
                "int32x16",
                "llvm.x86.avx512.vpdpbusd.512",
                acc[a, T.ramp(0, 1, R)],
                T.reinterpret("int8x64", T.broadcast(xq[k, 0], R)),
                T.reinterpret("int8x64", data[j, T.ramp(0, 1, R)]),
            )
        elif variant == "avx512bw":
            acc[a, T.ramp(0, 1, R)] = acc[a, T.ramp(0, 1, R)] + T.call_llvm_pure_intrin(
                "int32x16",
                "llvm.x86.avx512.pmaddw.d.512",
                T.call_llvm_pure_intrin(
                    "int16x32",
                    "llvm.x86.avx512.pmaddubs.w.512",
                    T.reinterpret("int8x64", T.broadcast(xq[k, 0], R)),
                    T.reinterpret("int8x64", data[j, T.ramp(0, 1, R)]),
                ),
                T.broadcast(T.int16(1), 32),
            )
        elif variant == "avx2":
            for rr in T.unroll(2):
                acc[a, T.ramp(rr * 8, 1, 8)] = acc[
                    a, T.ramp(rr * 8, 1, 8)
                ] + T.call_llvm_pure_intrin(
                    "int32x8",
                    "llvm.x86.avx2.pmadd.wd",
                    T.call_llvm_pure_intrin(
                        "int16x16",
                        "llvm.x86.avx2.pmadd.ub.sw",
                        T.reinterpret("int8x32", T.broadcast(xq[k, 0], 8)),
                        T.reinterpret("int8x32", data[j, T.ramp(rr * 8, 1, 8)]),
                    ),
                    T.broadcast(T.int16(1), 16),
                )
        else:
            for r in T.vectorized(R):
                acc[a, r] = (
                    acc[a, r]
                    + T.shift_right(T.shift_left(data[j, r], 24), 24) * T.bitwise_and(xq[k, 0], 255)
                    + T.shift_right(T.shift_left(data[j, r], 16), 24)
                    * T.bitwise_and(T.shift_right(xq[k, 0], 8), 255)
                    + T.shift_right(T.shift_left(data[j, r], 8), 24)
                    * T.bitwise_and(T.shift_right(xq[k, 0], 16), 255)
                    + T.shift_right(data[j, r], 24)
                    * T.bitwise_and(T.shift_right(xq[k, 0], 24), 255)
                )

    return dot4


def int8_spmm_macro(variant: str, R: int, B: int, mad: Callable[..., Any]) -> Any:
    """q_spmm: q_matvec for B streams at once (the batched kernel, models/kernel/batch.py).

    Each nonzero block is loaded once and multiplied into all B streams' inputs; each stream has
    its own accumulators, so its integer sums, and the float epilogue after them, are those of
    q_matvec for that stream alone, bit for bit. With B streams the accumulation chains are
    already B independent ones, so VNNI needs only 4 // B sets per stream to hide vpdpbusd's
    latency."""
    dot4 = dot4_macro(variant, R)
    QB = max(1, 4 // B) if variant == "vnni" else 1
    # AVX2 has 16 vector registers and a block takes two per stream: 8 streams' accumulators
    # would spill, so it goes over a block row's nonzeros once per group of 4 streams (the
    # blocks are then in L1)
    SB = min(B, 4) if variant == "avx2" else B
    assert B % SB == 0

    def sets(acc, b, r):
        # a stream's accumulator sets, summed (exact integers: any order gives the same sum)
        total = acc[b * QB, r]
        for a in range(1, QB):
            total = total + acc[b * QB + a, r]
        return total

    @T.macro
    def q_spmm(data, idx, ptr, xq, cols4, n_block_rows, scale, corr, bias, y, acc, relu, scaled,
               xscale, lscale):  # fmt: skip
        # y[b] = W x[b] + bias for every stream b (ReLU if relu); xq is the B streams' packed
        # inputs, cols4 int32s each (stream b's column group k is row b * cols4 + k). scaled: the
        # rows' scale times the stream's input scale xscale[b] and its logit scale lscale[b],
        # which also multiplies the bias (q_matvec's arguments as a stream's own logit-scaled
        # copies give them: the same float32 products)
        for br in range(n_block_rows):
            for g in range(B // SB):
                for a in T.unroll(SB * QB):
                    for r in T.vectorized(R):
                        acc[a, r] = 0
                if QB == 1:
                    for j in range(ptr[br], ptr[br + 1]):
                        for b in T.unroll(SB):
                            dot4(acc, b, data, j, xq, (g * SB + b) * cols4 + idx[j])
                else:
                    for jj in range((ptr[br + 1] - ptr[br]) // QB):
                        for a in T.unroll(QB):
                            for b in T.unroll(SB):
                                dot4(
                                    acc,
                                    b * QB + a,
                                    data,
                                    ptr[br] + jj * QB + a,
                                    xq,
                                    (g * SB + b) * cols4 + idx[ptr[br] + jj * QB + a],
                                )
                    for j in T.serial(ptr[br] + (ptr[br + 1] - ptr[br]) // QB * QB, ptr[br + 1]):
                        for b in T.unroll(SB):
                            dot4(acc, b * QB, data, j, xq, (g * SB + b) * cols4 + idx[j])
                for b in range(SB):
                    for r in T.vectorized(R):
                        if scaled:
                            y[g * SB + b, br * R + r] = mad(
                                T.Cast("float32", sets(acc, b, r) - corr[br * R + r]),
                                scale[br * R + r] * lscale[g * SB + b] * xscale[g * SB + b],
                                bias[br * R + r] * lscale[g * SB + b],
                            )
                        elif relu:
                            y[g * SB + b, br * R + r] = T.max(
                                mad(
                                    T.Cast("float32", sets(acc, b, r) - corr[br * R + r]),
                                    scale[br * R + r] * T.float32(1),
                                    bias[br * R + r],
                                ),
                                T.float32(0),
                            )
                        else:
                            y[g * SB + b, br * R + r] = mad(
                                T.Cast("float32", sets(acc, b, r) - corr[br * R + r]),
                                scale[br * R + r] * T.float32(1),
                                bias[br * R + r],
                            )

    return q_spmm
