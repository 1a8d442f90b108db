"""TVM whole-frame kernel: one compiled call generates hop_length samples autoregressively.

The call does, for one frame (T samples):
  1. project the conditioning of this frame and the next through W_cond (2 x [3H, C] matvecs;
     per-sample conditioning is their interpolation, so no per-sample matmul is needed);
  2. T times: block-sparse GRU recurrent matvec, gates with fast sigmoid/tanh, block-sparse
     FC1 + ReLU, block-sparse FC2, softmax with fast exp, inverse-CDF sample, feedback of the
     sample, the linear prediction and the excitation;
  3. de-emphasis of the frame's decoded samples into float PCM.
The GRU state, previous sample and excitation, and de-emphasis state are read from and written
back to in/out buffers, so a stream's state survives between calls without copies. The module's
second function, "condition", is the conditioning network, run for a batch of frames at a time.

The math is models/vocoder/reference.py's; tests/models/kernel/test_kernel.py checks them against each other.
Intermediates inside vectorised loops are staged in local buffers: binding them to Python names
there silently computes garbage in TVM 0.27 (see shared TVM notes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
from tvm.script import tirx as T

from models.vocoder.config import VocoderConfig
from models.vocoder.reference import (
    EXP2_POLY,
    EXP_FLOOR,
    LOG2E,
    SOURCE_INPUTS,
    STEP_INPUTS,
    TANH_ALPHA,
    TANH_BETA,
    TANH_CLAMP,
    CondMatrices,
    Q,
    QuantizedWeights,
    mulaw_table,
)
from models.vocoder.sparsity import BSR, to_bsr

# Target per ISA level. mcpu is explicit: TVM 0.27 rejects "native" and string targets.
ISA_TARGETS: dict[str, dict[str, object]] = {
    "avx512vnni": {"kind": "llvm", "mcpu": "cascadelake", "num-cores": 1},
    "avx512": {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 1},
    "avx2": {"kind": "llvm", "mcpu": "haswell", "num-cores": 1},
}
# CPU flags (from /proc/cpuinfo) each ISA module needs.
_AVX512 = frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd", "avx2", "fma", "f16c"})
ISA_FLAGS: dict[str, frozenset[str]] = {
    "avx512vnni": _AVX512 | {"avx512_vnni"},
    "avx512": _AVX512,
    "avx2": frozenset({"avx2", "fma", "f16c"}),
}
ISA_PREFERENCE = ("avx512vnni", "avx512", "avx2")  # best first
# The calling convention of the compiled frame function: its arguments, their layouts and the
# quantisation they assume. Bump it whenever those change; the loader refuses modules built for
# another ABI rather than feed them mis-shaped weights. 2: one int32 of 4 weights per block row on
# every ISA, weight pairs bounded for vpmaddubsw. 3: the module also holds "condition".
# 4: xprev holds [previous sample, de-emphasis state] and the frame also writes float PCM.
# 5: "condition" computes k frames per call from padded mel rows (cond, x, hid, weights).
# 6: the frame takes lpc [max(P, 1)] after cond, and xprev is [2 + P] (+ the LPC history).
# 7: the GRU also sees p[n] and e[n-1]: w_sample becomes w_in [3, 3H] (reference.STEP_INPUTS)
#    and xprev is [3 + P]: [previous sample, de-emphasis state, previous excitation, history].
# 8: the GRU also sees the sine source (models/dsp/pitch.py): the frame takes src [T, 2] after lpc,
#    and w_in is [5, 3H].
# 9: tanh is reference.TANH_*'s 5-FMA rational, not Eigen's 9-FMA one. The arguments are those of
#    8, but a module must compute its reference's math, and the host-compile cache is keyed by ABI.
KERNEL_ABI = 9
# How each ISA level runs an int8 block (16 rows x 4 columns, one int32 of 4 weights per row):
#   vnni:     one vpdpbusd (u8 x s8, 4 products summed per int32 lane)
#   avx512bw: vpmaddubsw (u8 x s8, pairs summed into int16) then vpmaddwd by ones (pairs of int16
#             summed into int32): the VNNI emulation LPCNet uses; it cannot saturate because
#             reference.quantize_rows bounds every weight pair by 128
#   avx2:     the same with 256-bit registers (two of each per block)
#   generic:  plain integer SIMD that LLVM vectorises for any CPU (host fallback)
# All are exact integer sums, so every ISA level produces the same samples. (The earlier avx2 path,
# sign-extend to int16 then vpmaddwd, took twice the instructions per block.)
INT8_VARIANT = {"avx512vnni": "vnni", "avx512": "avx512bw", "avx2": "avx2"}


def fma(a: tvm.tirx.PrimExpr, b: tvm.tirx.PrimExpr, c: tvm.tirx.PrimExpr) -> tvm.tirx.PrimExpr:
    """a * b + c rounded once (models.vocoder.reference.fma32), vectorised like any elementwise op.

    Written out rather than left to LLVM's contraction of `a * b + c`: where both operands of an
    add are products, or an ISA has no FMA, LLVM's choice decides the last bit, and a last-bit
    difference that meets an 8-bit rounding edge moves a quantised activation (h off by ~2e-3).
    With every fused step explicit, the kernel's h is the reference's bit for bit.
    """
    return T.call_llvm_pure_intrin("float32", "llvm.fma.f32", a, b, c)


def multiply_add(fused: bool) -> Callable[[tvm.tirx.PrimExpr, tvm.tirx.PrimExpr, tvm.tirx.PrimExpr], tvm.tirx.PrimExpr]:
    """`fma` for the shipped ISA levels (all have FMA hardware). The host fallback (any x86-64)
    gets a plain a * b + c instead: on a CPU without FMA, llvm.fma is a libm call per element,
    which measured 70 us/sample for the shipped voice, beyond the 40 us budget. There LLVM rounds
    the product and the sum separately, so the fallback is the reference only to float rounding
    (the samples of tests/models/test_runtime.py still agree)."""
    return fma if fused else lambda a, b, c: a * b + c


def tanh_rational(x: tvm.tirx.PrimExpr, x2: tvm.tirx.PrimExpr, mad: Callable = fma) -> tvm.tirx.PrimExpr:
    """fast_tanh's rational P(x2) * x / Q(x2) on an already clamped x, with x2 = x * x.

    A plain Python builder, called from the TVMScript below: the expression tree (Horner steps as
    FMAs, as models.vocoder.reference._tanh_rational) is written once for the GRU gates and the
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
    """2^f on [0, 1) (models.vocoder.reference.fast_exp's polynomial), Horner steps as FMAs."""
    p = T.float32(float(EXP2_POLY[-1]))
    for c in reversed(EXP2_POLY[:-1]):
        p = mad(p, f, T.float32(float(c)))
    return p


@dataclass(frozen=True)
class KernelShape:
    """Everything the compiled function is specialised on (weights are arguments, not constants)."""

    config: VocoderConfig
    nnzb_hh: int
    nnzb_fc1: int
    nnzb_fc2: int
    source: bool = True  # False: the sine-source weights are all zero, so its terms are left out


def make_frame_kernel(shape: KernelShape, variant: str = "generic") -> tvm.tirx.PrimFunc:
    """Build the PrimFunc for one frame. Python ints below are compile-time constants."""
    cfg = shape.config
    H = cfg.hidden_size
    G = 3 * H
    F = cfg.fc_size
    K = cfg.n_classes
    C = cfg.cond_size
    TT = cfg.hop_length
    R = cfg.block_rows
    CB = cfg.block_cols
    NH, N1, N2 = shape.nnzb_hh, shape.nnzb_fc1, shape.nnzb_fc2
    WD = cfg.weight_dtype
    INT8 = WD == "int8"
    if INT8:
        assert CB == 4, "int8 blocks hold the 4 columns one VNNI dot product sums"
        assert R == 16 or variant == "generic", "the SIMD int8 paths use 16 int32 lanes"
    assert variant in ("vnni", "avx512bw", "avx2", "generic")
    V = 16  # vector width for elementwise stages; 512-bit = 16 fp32 lanes
    assert H % V == 0 and F % V == 0 and K % V == 0 and G % V == 0
    KG = K // V  # groups of the two-level inverse-CDF search

    clamp = float(TANH_CLAMP)
    log2e = float(LOG2E)
    exp_floor = float(EXP_FLOOR)
    preemph = float(cfg.preemphasis)
    P = cfg.lpc_order
    PL = max(P, 1)  # the lpc argument is a 1-element placeholder without linear prediction
    SRC = shape.source
    mad = multiply_add(variant != "generic")

    NACC = 4  # independent accumulator sets: hides FMA latency behind the block loop
    # int8: vpdpbusd accumulates in place (a 4-5 cycle chain), so VNNI wants the same 4 sets; the
    # vpmaddubsw paths end each block in a 1-cycle vpaddd, where one set measured fastest
    # (AVX2 Zen 3, whole kernel: 1 set 3.10 us/sample, 2 sets 3.39, 4 sets 3.60).
    QACC = 4 if variant == "vnni" else 1

    @T.macro
    def f_matvec(data, idx, ptr, x, n_block_rows, bias, y, acc, relu):
        # y = W x + bias (ReLU if relu), W in BSR with R x CB blocks stored [nnzb, CB, R] so each
        # column of a block is one contiguous vector. Blocks are taken NACC at a time into separate
        # accumulators so consecutive FMAs do not wait on each other.
        for br in range(n_block_rows):
            for a in T.unroll(NACC):
                for r in T.vectorized(R):
                    acc[a, r] = T.float32(0)
            for jj in range((ptr[br + 1] - ptr[br]) // NACC):
                for a in T.unroll(NACC):
                    for cc in T.unroll(CB):
                        for r in T.vectorized(R):
                            acc[a, r] = acc[a, r] + T.Cast("float32", data[ptr[br] + jj * NACC + a, cc, r]) * x[
                                idx[ptr[br] + jj * NACC + a] * CB + cc
                            ]
            for j in T.serial(ptr[br] + (ptr[br + 1] - ptr[br]) // NACC * NACC, ptr[br + 1]):
                for cc in T.unroll(CB):
                    for r in T.vectorized(R):
                        acc[0, r] = acc[0, r] + T.Cast("float32", data[j, cc, r]) * x[idx[j] * CB + cc]
            for r in T.vectorized(R):
                if relu:
                    y[br * R + r] = T.max((acc[0, r] + acc[1, r]) + (acc[2, r] + acc[3, r]) + bias[br * R + r], T.float32(0))
                else:
                    y[br * R + r] = (acc[0, r] + acc[1, r]) + (acc[2, r] + acc[3, r]) + bias[br * R + r]

    @T.macro
    def project_cond(cond, w_cond_t, b_ih, p0, p1):
        # conditioning projection of this frame and the next: two [3H, C] matvecs per frame,
        # kept as base = P0 + b_ih and slope = P1 - P0 so each step interpolates with one FMA
        for jo in range(G // V):
            for ji in T.vectorized(V):
                p0[jo * V + ji] = T.float32(0)
                p1[jo * V + ji] = T.float32(0)
            for c in range(C):
                for ji in T.vectorized(V):
                    p0[jo * V + ji] = mad(cond[0, c], w_cond_t[c, jo * V + ji], p0[jo * V + ji])
                    p1[jo * V + ji] = mad(cond[1, c], w_cond_t[c, jo * V + ji], p1[jo * V + ji])
            for ji in T.vectorized(V):
                p1[jo * V + ji] = p1[jo * V + ji] - p0[jo * V + ji]
                p0[jo * V + ji] = p0[jo * V + ji] + b_ih[jo * V + ji]

    def gate_input(p0, p1, w_in, sc, j):
        # gi at gate element j: the interpolated conditioning projection plus each step input
        # (the sine source's two only when the model uses it: KernelShape.source), summed left to
        # right as reference.run_frame does. A plain Python builder like tanh_rational, so each
        # gate's sum stays one expression (split into statements it measured ~0.3 us/sample slower).
        acc = mad(sc[0], p1[j], p0[j])
        for k in range(len(STEP_INPUTS) if SRC else len(STEP_INPUTS) - len(SOURCE_INPUTS)):
            acc = mad(w_in[k, j], sc[3 + k], acc)
        return acc

    @T.macro
    def gru_update(sc, p0, p1, w_in, gh, h, s):
        # gates r, z, n and the new state, V lanes at a time; sc[0] = a, and the step inputs
        # sc[3] = previous sample, sc[4] = prediction, sc[5] = previous excitation,
        # sc[6], sc[7] = the sine source
        for io in range(H // V):
            for ii in T.vectorized(V):
                # s[0] = gi_r + gh_r ; s[1] = gi_z + gh_z (input projection interpolated)
                s[0, ii] = gate_input(p0, p1, w_in, sc, io * V + ii) + gh[io * V + ii]
                s[1, ii] = gate_input(p0, p1, w_in, sc, H + io * V + ii) + gh[H + io * V + ii]
                # sigmoid(v) = 0.5 + 0.5 tanh(v/2): clamp, square, rational
                s[0, ii] = T.min(T.max(s[0, ii] * T.float32(0.5), T.float32(-clamp)), T.float32(clamp))
                s[1, ii] = T.min(T.max(s[1, ii] * T.float32(0.5), T.float32(-clamp)), T.float32(clamp))
                s[2, ii] = s[0, ii] * s[0, ii]
                s[3, ii] = s[1, ii] * s[1, ii]
                s[0, ii] = T.float32(0.5) + T.float32(0.5) * tanh_rational(s[0, ii], s[2, ii], mad)
                s[1, ii] = T.float32(0.5) + T.float32(0.5) * tanh_rational(s[1, ii], s[3, ii], mad)
                # n = tanh(gi_n + r * gh_n)
                s[4, ii] = mad(s[0, ii], gh[2 * H + io * V + ii], gate_input(p0, p1, w_in, sc, 2 * H + io * V + ii))
                s[4, ii] = T.min(T.max(s[4, ii], T.float32(-clamp)), T.float32(clamp))
                s[5, ii] = s[4, ii] * s[4, ii]
                s[4, ii] = tanh_rational(s[4, ii], s[5, ii], mad)
                h[io * V + ii] = mad(s[1, ii], h[io * V + ii], (T.float32(1) - s[1, ii]) * s[4, ii])

    @T.macro
    def softmax_sample(t, logit, prob, gsum, m, s, sc, si, uniforms, out):
        # softmax numerator with fast exp: max over V lanes, then reduce lanes
        for ii in T.vectorized(V):
            m[ii] = logit[ii]
        for ko in range(1, K // V):
            for ii in T.vectorized(V):
                m[ii] = T.max(m[ii], logit[ko * V + ii])
        sc[1] = m[0]
        for ii in range(1, V):
            sc[1] = T.max(sc[1], m[ii])
        for ko in range(K // V):
            for ii in T.vectorized(V):
                s[6, ii] = T.max(logit[ko * V + ii] - sc[1], T.float32(exp_floor)) * T.float32(log2e)
                s[7, ii] = T.floor(s[6, ii])
                s[6, ii] = s[6, ii] - s[7, ii]
                prob[ko * V + ii] = exp2_poly(s[6, ii], mad) * T.reinterpret(
                    "float32", T.shift_left(T.Cast("int32", s[7, ii]) + 127, 23)
                )
        # 7. inverse CDF: group sums (KG groups of V), pick the group, then the class
        for g in range(KG):
            gsum[g] = T.float32(0)
            for ii in range(V):
                gsum[g] = gsum[g] + prob[g * V + ii]
        sc[1] = T.float32(0)
        for g in range(KG):
            sc[1] = sc[1] + gsum[g]
        sc[2] = uniforms[t] * sc[1]  # target mass
        si[0] = KG - 1
        si[1] = 0  # found flag
        sc[1] = T.float32(0)  # running mass before the chosen group
        for g in range(KG):
            if si[1] == 0:
                if sc[1] + gsum[g] > sc[2]:
                    si[0] = g
                    si[1] = 1
                else:
                    sc[1] = sc[1] + gsum[g]
        si[1] = 0
        out[t] = si[0] * V + V - 1
        for ii in range(V):
            if si[1] == 0:
                sc[1] = sc[1] + prob[si[0] * V + ii]
                if sc[1] > sc[2]:
                    out[t] = si[0] * V + ii
                    si[1] = 1

    @T.macro
    def predict(lpc, xprev, sc, d64):
        # sc[4] = p[t] = -sum_i a_i s[t-i] from the history xprev[3:] (float64 products and sum,
        # rounded once, as reference.predict); 0 without LPC
        if P > 0:
            d64[0] = T.float64(0)
            for i in range(P):
                d64[0] = d64[0] + T.Cast("float64", lpc[i]) * T.Cast("float64", xprev[3 + i])
            sc[4] = T.Cast("float32", -d64[0])
        else:
            sc[4] = T.float32(0)

    @T.macro
    def next_sample(t, out, table, xprev, sig, sc):
        # sc[5] = the drawn class's excitation; sc[3] = sig[t] = this step's sample of the
        # pre-emphasised signal: the excitation plus, with LPC, the prediction sc[4], which then
        # shifts into the history.
        sc[5] = table[out[t]]
        if P > 0:
            sc[3] = T.min(T.max(sc[4] + sc[5], T.float32(-1)), T.float32(1))
            for j in range(P - 1):
                xprev[P + 2 - j] = xprev[P + 1 - j]
            xprev[3] = sc[3]
        else:
            sc[3] = sc[5]
        sig[t] = sc[3]

    @T.macro
    def deemphasize(sig, xprev, pcm, sc):
        # pcm[t] = y[t] clipped to [-1, 1], y[t] = sig[t] + p * y[t - 1]: the inverse of the
        # pre-emphasis the net was trained on; y carries over in xprev[1]. Done here, the stream
        # gets float PCM from one read instead of a filter call per frame.
        sc[1] = xprev[1]
        for t in range(TT):
            # an explicit fused multiply-add: the same rounding with or without FMA hardware
            sc[1] = fma(T.float32(preemph), sc[1], sig[t])
            pcm[t] = T.min(T.max(sc[1], T.float32(-1)), T.float32(1))
        xprev[1] = sc[1]

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
                acc[a, T.ramp(rr * 8, 1, 8)] = acc[a, T.ramp(rr * 8, 1, 8)] + T.call_llvm_pure_intrin(
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
                    + T.shift_right(T.shift_left(data[j, r], 16), 24) * T.bitwise_and(T.shift_right(xq[k, 0], 8), 255)
                    + T.shift_right(T.shift_left(data[j, r], 8), 24) * T.bitwise_and(T.shift_right(xq[k, 0], 16), 255)
                    + T.shift_right(data[j, r], 24) * T.bitwise_and(T.shift_right(xq[k, 0], 24), 255)
                )

    @T.macro
    def q_matvec(data, idx, ptr, xq, n_block_rows, scale, corr, xscale, bias, y, acc, relu):
        # int8 twin of f_matvec: data[j, r] packs the 4 int8 weights of row r in block j, xq[k]
        # packs the 4 uint8 inputs (value + 128) of columns 4k..4k+3; integer accumulation is
        # exact, the +128 offset is removed with corr = 128 * row sum.
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
                        dot4(acc, a, data, ptr[br] + jj * QACC + a, xq, idx[ptr[br] + jj * QACC + a])
                for j in T.serial(ptr[br] + (ptr[br + 1] - ptr[br]) // QACC * QACC, ptr[br + 1]):
                    dot4(acc, 0, data, j, xq, idx[j])
                for r in T.vectorized(R):
                    acc[1, r] = (acc[0, r] + acc[1, r]) + (acc[2, r] + acc[3, r]) - corr[br * R + r]
            for r in T.vectorized(R):
                if relu:
                    y[br * R + r] = T.max(
                        mad(T.Cast("float32", acc[1, r]), scale[br * R + r] * xscale, bias[br * R + r]),
                        T.float32(0),
                    )
                else:
                    y[br * R + r] = mad(T.Cast("float32", acc[1, r]), scale[br * R + r] * xscale, bias[br * R + r])

    @T.macro
    def quantize4(x, n, scale, xq8):
        # inputs: floor(x[i] * scale + 0.5) + 128 (as models.vocoder.reference rounds), stored as
        # contiguous bytes; the matvec reads them 4 at a time through an int32 view of the same
        # memory, the u8 operand of vpdpbusd / vpmaddubsw. (Packing the 4 bytes with shifts from
        # stride-4 loads cost ~0.5 us/sample on AVX2.)
        for io in range(n // V):
            for ii in T.vectorized(V):
                xq8[io * V + ii] = T.Cast("uint8", T.Cast("int32", T.floor(mad(x[io * V + ii], scale, T.float32(0.5)))) + 128)

    @T.prim_func
    def frame_float(
        cond: T.Buffer((2, C), "float32"),
        lpc: T.Buffer((PL,), "float32"),
        src: T.Buffer((TT, 2), "float32"),
        uniforms: T.Buffer((TT,), "float32"),
        h: T.Buffer((H,), "float32"),
        xprev: T.Buffer((3 + P,), "float32"),
        out: T.Buffer((TT,), "int32"),
        pcm: T.Buffer((TT,), "float32"),
        w_cond_t: T.Buffer((C, G), "float32"),
        w_in: T.Buffer((5, G), "float32"),
        b_ih: T.Buffer((G,), "float32"),
        b_hh: T.Buffer((G,), "float32"),
        hh_data: T.Buffer((NH, CB, R), WD),
        hh_idx: T.Buffer((NH,), "int32"),
        hh_ptr: T.Buffer((G // R + 1,), "int32"),
        fc1_data: T.Buffer((N1, CB, R), WD),
        fc1_idx: T.Buffer((N1,), "int32"),
        fc1_ptr: T.Buffer((F // R + 1,), "int32"),
        fc1_b: T.Buffer((F,), "float32"),
        fc2_data: T.Buffer((N2, CB, R), WD),
        fc2_idx: T.Buffer((N2,), "int32"),
        fc2_ptr: T.Buffer((K // R + 1,), "int32"),
        fc2_b: T.Buffer((K,), "float32"),
        table: T.Buffer((K,), "float32"),
    ):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        p0 = T.alloc_buffer((G,), "float32")
        p1 = T.alloc_buffer((G,), "float32")
        gh = T.alloc_buffer((G,), "float32")
        y1 = T.alloc_buffer((F,), "float32")
        logit = T.alloc_buffer((K,), "float32")
        prob = T.alloc_buffer((K,), "float32")
        gsum = T.alloc_buffer((KG,), "float32")
        s = T.alloc_buffer((8, V), "float32", scope="local")
        m = T.alloc_buffer((V,), "float32", scope="local")
        sc = T.alloc_buffer((8,), "float32", scope="local")
        sig = T.alloc_buffer((TT,), "float32")
        d64 = T.alloc_buffer((1,), "float64", scope="local")
        si = T.alloc_buffer((2,), "int32", scope="local")
        acc = T.alloc_buffer((NACC, R), "float32", scope="local")
        project_cond(cond, w_cond_t, b_ih, p0, p1)
        sc[3] = xprev[0]
        sc[5] = xprev[2]
        for t in range(TT):
            sc[0] = T.Cast("float32", t) / T.float32(TT)  # interpolation weight a
            f_matvec(hh_data, hh_idx, hh_ptr, h, G // R, b_hh, gh, acc, False)
            predict(lpc, xprev, sc, d64)
            sc[6] = src[t, 0]
            sc[7] = src[t, 1]
            gru_update(sc, p0, p1, w_in, gh, h, s)
            f_matvec(fc1_data, fc1_idx, fc1_ptr, h, F // R, fc1_b, y1, acc, True)
            f_matvec(fc2_data, fc2_idx, fc2_ptr, y1, K // R, fc2_b, logit, acc, False)
            softmax_sample(t, logit, prob, gsum, m, s, sc, si, uniforms, out)
            next_sample(t, out, table, xprev, sig, sc)
        xprev[0] = sc[3]
        xprev[2] = sc[5]
        deemphasize(sig, xprev, pcm, sc)

    @T.prim_func
    def frame_int8(
        cond: T.Buffer((2, C), "float32"),
        lpc: T.Buffer((PL,), "float32"),
        src: T.Buffer((TT, 2), "float32"),
        uniforms: T.Buffer((TT,), "float32"),
        h: T.Buffer((H,), "float32"),
        xprev: T.Buffer((3 + P,), "float32"),
        out: T.Buffer((TT,), "int32"),
        pcm: T.Buffer((TT,), "float32"),
        w_cond_t: T.Buffer((C, G), "float32"),
        w_in: T.Buffer((5, G), "float32"),
        b_ih: T.Buffer((G,), "float32"),
        b_hh: T.Buffer((G,), "float32"),
        hh_data: T.Buffer((NH, R), "int32"),
        hh_idx: T.Buffer((NH,), "int32"),
        hh_ptr: T.Buffer((G // R + 1,), "int32"),
        hh_scale: T.Buffer((G,), "float32"),
        hh_corr: T.Buffer((G,), "int32"),
        fc1_data: T.Buffer((N1, R), "int32"),
        fc1_idx: T.Buffer((N1,), "int32"),
        fc1_ptr: T.Buffer((F // R + 1,), "int32"),
        fc1_scale: T.Buffer((F,), "float32"),
        fc1_corr: T.Buffer((F,), "int32"),
        fc1_b: T.Buffer((F,), "float32"),
        fc2_data: T.Buffer((N2, R), "int32"),
        fc2_idx: T.Buffer((N2,), "int32"),
        fc2_ptr: T.Buffer((K // R + 1,), "int32"),
        fc2_scale: T.Buffer((K,), "float32"),
        fc2_corr: T.Buffer((K,), "int32"),
        fc2_b: T.Buffer((K,), "float32"),
        table: T.Buffer((K,), "float32"),
    ):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        p0 = T.alloc_buffer((G,), "float32")
        p1 = T.alloc_buffer((G,), "float32")
        gh = T.alloc_buffer((G,), "float32")
        y1 = T.alloc_buffer((F,), "float32")
        logit = T.alloc_buffer((K,), "float32")
        prob = T.alloc_buffer((K,), "float32")
        gsum = T.alloc_buffer((KG,), "float32")
        s = T.alloc_buffer((8, V), "float32", scope="local")
        m = T.alloc_buffer((V,), "float32", scope="local")
        sc = T.alloc_buffer((8,), "float32", scope="local")
        sig = T.alloc_buffer((TT,), "float32")
        d64 = T.alloc_buffer((1,), "float64", scope="local")
        si = T.alloc_buffer((2,), "int32", scope="local")
        acc = T.alloc_buffer((4, R), "int32", scope="local")
        hq8 = T.alloc_buffer((H,), "uint8")
        hq = T.decl_buffer((H // 4, 1), "int32", data=hq8.data)
        yq8 = T.alloc_buffer((F,), "uint8")
        yq = T.decl_buffer((F // 4, 1), "int32", data=yq8.data)
        ys = T.alloc_buffer((2,), "float32", scope="local")
        project_cond(cond, w_cond_t, b_ih, p0, p1)
        sc[3] = xprev[0]
        sc[5] = xprev[2]
        quantize4(h, H, T.float32(Q), hq8)
        for t in range(TT):
            sc[0] = T.Cast("float32", t) / T.float32(TT)  # interpolation weight a
            q_matvec(hh_data, hh_idx, hh_ptr, hq, G // R, hh_scale, hh_corr, T.float32(1), b_hh, gh, acc, False)
            predict(lpc, xprev, sc, d64)
            sc[6] = src[t, 0]
            sc[7] = src[t, 1]
            gru_update(sc, p0, p1, w_in, gh, h, s)
            quantize4(h, H, T.float32(Q), hq8)
            q_matvec(fc1_data, fc1_idx, fc1_ptr, hq, F // R, fc1_scale, fc1_corr, T.float32(1), fc1_b, y1, acc, True)
            # FC2 input scale: max(y1) / 127 this step (y1 >= 0 after the ReLU)
            for ii in T.vectorized(V):
                m[ii] = y1[ii]
            for ko in range(1, F // V):
                for ii in T.vectorized(V):
                    m[ii] = T.max(m[ii], y1[ko * V + ii])
            ys[0] = m[0]
            for ii in range(1, V):
                ys[0] = T.max(ys[0], m[ii])
            ys[1] = ys[0] / T.float32(Q)
            ys[0] = T.if_then_else(ys[0] > T.float32(0), T.float32(Q) / ys[0], T.float32(0))
            quantize4(y1, F, ys[0], yq8)
            q_matvec(fc2_data, fc2_idx, fc2_ptr, yq, K // R, fc2_scale, fc2_corr, ys[1], fc2_b, logit, acc, False)
            softmax_sample(t, logit, prob, gsum, m, s, sc, si, uniforms, out)
            next_sample(t, out, table, xprev, sig, sc)
        xprev[0] = sc[3]
        xprev[2] = sc[5]
        deemphasize(sig, xprev, pcm, sc)

    return frame_int8 if INT8 else frame_float


def make_condition_kernel(cfg: VocoderConfig, fused: bool = True) -> tvm.tirx.PrimFunc:
    """The conditioning network for k consecutive frames (k is a call-time size).

    x holds the frames' padded normalised mel rows [k + 4, M] (frame g reads rows g..g+4, see
    models.vocoder.reference.pad_mel); conv1 runs once per mel position into the caller's scratch `hid`
    [k + 2, CH], then conv2 + tanh writes cond [k, C]. A stream calls it for a batch of frames at a
    time: its 0.6 MB of float32 weights, evicted by every frame call, are then streamed from cache
    once per batch instead of once per frame, and conv1 is not recomputed for overlapping windows.
    Dot products accumulate in float64 (float32 x float32 products are exact there) and round to
    float32 once, as models.vocoder.reference.condition_rows does: the result does not depend on summation
    order, so it matches numpy's BLAS bit for bit (a float64 sum would need to land within ~1e-16 of
    a float32 rounding edge to differ).
    """
    M, CH, C = cfg.n_mels, cfg.cond_hidden, cfg.cond_size
    V = 16
    mad = multiply_add(fused)
    assert CH % V == 0 and C % V == 0
    clamp = float(TANH_CLAMP)

    @T.macro
    def dot3(acc, src, row, width, w, oo):
        # k=3 convolution output lanes oo*V..oo*V+V-1 at `row`: the float64 dot product of
        # src rows row..row+2 (flattened, tap-major as w) with columns of w
        for oi in T.vectorized(V):
            acc[oi] = T.float64(0)
        for i in range(3 * width):
            for oi in T.vectorized(V):
                acc[oi] = acc[oi] + T.Cast("float64", src[row + i // width, i % width]) * T.Cast("float64", w[i, oo * V + oi])

    @T.prim_func
    def condition(
        cond_h: T.handle,
        x_h: T.handle,
        hid_h: T.handle,
        w1: T.Buffer((3 * M, CH), "float32"),
        b1: T.Buffer((CH,), "float32"),
        w2: T.Buffer((3 * CH, C), "float32"),
        b2: T.Buffer((C,), "float32"),
    ):
        T.func_attr({"global_symbol": "condition", "tirx.noalias": True})
        k = T.int32()
        cond = T.match_buffer(cond_h, (k, C), "float32")  # binds k: matched first
        x = T.match_buffer(x_h, (k + 4, M), "float32")
        hid = T.match_buffer(hid_h, (k + 2, CH), "float32")
        acc = T.alloc_buffer((V,), "float64", scope="local")
        s = T.alloc_buffer((2, V), "float32", scope="local")
        for q in range(k + 2):
            for oo in range(CH // V):
                dot3(acc, x, q, M, w1, oo)
                for oi in T.vectorized(V):
                    hid[q, oo * V + oi] = T.max(
                        T.Cast("float32", acc[oi] + T.Cast("float64", b1[oo * V + oi])), T.float32(0)
                    )
        for g in range(k):
            for oo in range(C // V):
                dot3(acc, hid, g, CH, w2, oo)
                for oi in T.vectorized(V):
                    # fast tanh exactly as models.vocoder.reference.fast_tanh: clamp, square, rational
                    s[0, oi] = T.Cast("float32", acc[oi] + T.Cast("float64", b2[oo * V + oi]))
                    s[0, oi] = T.min(T.max(s[0, oi], T.float32(-clamp)), T.float32(clamp))
                    s[1, oi] = s[0, oi] * s[0, oi]
                    cond[g, oo * V + oi] = tanh_rational(s[0, oi], s[1, oi], mad)

    return condition


def build(shape: KernelShape, isa: str | None, target: dict[str, object] | None = None) -> tvm.runtime.Module:
    """Compile the frame kernel ("main") and the conditioning network ("condition") for one ISA
    level (or an explicit target dict)."""
    if target is None:
        if isa not in ISA_TARGETS:
            raise ValueError(f"unknown ISA {isa!r}; known: {sorted(ISA_TARGETS)}")
        target = ISA_TARGETS[isa]
    variant = INT8_VARIANT.get(isa or "", "generic")
    func = make_frame_kernel(shape, variant)
    cond = make_condition_kernel(shape.config, fused=variant != "generic")
    return tvm.compile(tvm.IRModule({"main": func, "condition": cond}), target=tvm.target.Target(target))


def condition_args(weights: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Weight arguments of the "condition" function, after (cond, x, hid). float32: float64
    copies measured slower (twice the bytes to stream from cache for no fewer FMAs)."""
    m = CondMatrices.from_weights(weights)
    return [m.w1, m.b1, m.w2, m.b2]


STATE_ARGS = ("cond", "lpc", "src", "uniforms", "h", "xprev", "out", "pcm")
"""Per-call arguments, in order; the weight arguments follow them."""


def pack_weights(
    weights: dict[str, np.ndarray], config: VocoderConfig, isa: str | None = None
) -> tuple[KernelShape, list[np.ndarray]]:
    """Reference weights -> (kernel shape, weight arguments in the kernel's order for `isa`)."""
    block = (config.block_rows, config.block_cols)
    packed = {name: to_bsr(weights[name], block) for name in ("gru.w_hh", "fc1.weight", "fc2.weight")}
    wd = np.dtype(config.weight_dtype)

    def bsr_args(name: str) -> list[np.ndarray]:
        b = packed[name]
        # [nnzb, R, CB] -> [nnzb, CB, R]: one contiguous vector per block column
        return [np.ascontiguousarray(b.data.transpose(0, 2, 1).astype(wd)), b.indices, b.indptr]

    if config.weight_dtype == "int8":
        q = QuantizedWeights.from_weights(weights)
        sparse = [
            *int8_args(q.hh, q.hh_scale, packed["gru.w_hh"]),
            *int8_args(q.fc1, q.fc1_scale, packed["fc1.weight"]),
            weights["fc1.bias"].astype(np.float32),
            *int8_args(q.fc2, q.fc2_scale, packed["fc2.weight"]),
        ]
    else:
        sparse = [*bsr_args("gru.w_hh"), *bsr_args("fc1.weight"), weights["fc1.bias"].astype(np.float32), *bsr_args("fc2.weight")]
    args = [
        np.ascontiguousarray(weights["gru.w_cond"].T.astype(np.float32)),
        np.ascontiguousarray(np.stack([weights[k] for k in STEP_INPUTS]).astype(np.float32)),
        weights["gru.b_ih"].astype(np.float32),
        weights["gru.b_hh"].astype(np.float32),
        *sparse,
        weights["fc2.bias"].astype(np.float32),
        mulaw_table(),
    ]
    shape = KernelShape(
        config=config,
        nnzb_hh=packed["gru.w_hh"].data.shape[0],
        nnzb_fc1=packed["fc1.weight"].data.shape[0],
        nnzb_fc2=packed["fc2.weight"].data.shape[0],
        source=any(np.any(weights[k] != 0) for k in SOURCE_INPUTS),
    )
    return shape, args


def logit_arg_positions(config: VocoderConfig) -> tuple[int, int]:
    """Positions, among pack_weights' arguments, of the two arrays the logits are linear in:
    FC2's row scales (int8; its weights otherwise) and its bias. Multiplying both by s multiplies
    the logits by s, the frame's sampling temperature by 1 / s, with the module unchanged
    (VocoderConfig.voiced_logit_scale; reference.run_frame's logit_scale does the same)."""
    per_matrix = 5 if config.weight_dtype == "int8" else 3  # data, indices, indptr[, scale, corr]
    fc2 = 4 + 2 * per_matrix + 1  # after w_cond, step inputs, b_ih, b_hh, W_hh, FC1, FC1's bias
    return (fc2 + 3 if config.weight_dtype == "int8" else fc2), fc2 + per_matrix


def int8_args(wq: np.ndarray, scale: np.ndarray, pattern: BSR) -> list[np.ndarray]:
    """int8 matrix -> (packed data, indices, indptr, scale, corr) for the kernel.

    The blocks are those of `pattern`, the float matrix's BSR, which KernelShape counts: a kept
    block whose weights all round to 0 in int8 (all below half a step of its rows' scale) stays a
    (zero) block, rather than vanishing and leaving the module a block count short.
    Layout [nnzb, R] int32: each int32 holds one row's 4 int8 weights of a block (little-endian
    byte order = column order), the operand layout of vpdpbusd and vpmaddubsw alike.
    corr = 128 * row sum undoes the +128 offset that makes inputs unsigned.
    """
    r, c = pattern.block
    blocks = wq.reshape(wq.shape[0] // r, r, wq.shape[1] // c, c).transpose(0, 2, 1, 3)
    rows = np.repeat(np.arange(pattern.indptr.size - 1), np.diff(pattern.indptr))
    data = np.ascontiguousarray(blocks[rows, pattern.indices].astype(np.int8))  # [nnzb, R, 4]
    packed = data.view(np.int32)[:, :, 0]
    corr = (128 * wq.astype(np.int64).sum(axis=1)).astype(np.int32)
    return [np.ascontiguousarray(packed), pattern.indices, pattern.indptr, scale.astype(np.float32), corr]
