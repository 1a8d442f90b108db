"""The conditioning network as a TVM function ("condition" in every compiled module)."""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from models.kernel.tir_math import multiply_add, tanh_rational
from models.vocoder.config import NetConfig
from models.vocoder.fastmath import TANH_CLAMP


def make_condition_kernel(cfg: NetConfig, fused: bool = True, rows: int = 4) -> tvm.tirx.PrimFunc:
    """The conditioning network for k consecutive frames (k is a call-time size).

    x holds the frames' padded normalised mel rows [k + 4, M] (frame g reads rows g..g+4, see
    models.vocoder.conditioning.pad_mel); conv1 runs once per mel position into the caller's scratch
    `hid`
    [k + 2, CH], then conv2 + tanh writes cond [k, C]. A stream calls it for a batch of frames at a
    time: its 0.6 MB of float32 weights, evicted by every frame call, are then streamed from cache
    once per batch instead of once per frame, and conv1 is not recomputed for overlapping windows.
    Dot products accumulate in float64 (float32 x float32 products are exact there) and round to
    float32 once, as models.vocoder.conditioning.condition_rows does: the result does not depend on
    summation
    order, so it matches numpy's BLAS bit for bit (a float64 sum would need to land within ~1e-16 of
    a float32 rounding edge to differ).

    `rows` output rows are computed side by side, each weight vector loaded once for all of them:
    4 x 16 float64 lanes fill 8 of AVX-512's 32 registers (14.4 -> 3.8 us a frame at k = 16 on
    Zen 5); AVX2's 16 registers hold 2 (17.0 -> 5.4). The sums are the one-row sums, so the
    result does not depend on `rows`.
    """
    M, CH, C = cfg.n_mels, cfg.cond_hidden, cfg.cond_size
    V = 16
    QR = rows  # rows computed side by side (dot3)
    mad = multiply_add(fused)
    assert CH % V == 0 and C % V == 0
    clamp = float(TANH_CLAMP)

    @T.macro
    def dot3(acc, src, row, rows, width, w, oo):
        # k=3 convolution output lanes oo*V..oo*V+V-1 at `rows` consecutive rows from `row`: each
        # the float64 dot product of its src rows row+r..row+r+2 (flattened, tap-major as w) with
        # columns of w, summed in that order. Rows side by side reuse each weight load and give
        # the adds independent chains (one row's chain is latency-bound); every output's sum is
        # the one-row sum, term for term.
        for r in T.unroll(rows):
            for oi in T.vectorized(V):
                acc[r, oi] = T.float64(0)
        for t in range(3):
            for c in range(width):
                for r in T.unroll(rows):
                    for oi in T.vectorized(V):
                        acc[r, oi] = acc[r, oi] + T.Cast("float64", src[row + r + t, c]) * T.Cast(
                            "float64", w[t * width + c, oo * V + oi]
                        )

    @T.macro
    def conv1_rows(acc, x, q, rows, w1, b1, hid):
        for oo in range(CH // V):
            dot3(acc, x, q, rows, M, w1, oo)
            for r in T.unroll(rows):
                for oi in T.vectorized(V):
                    hid[q + r, oo * V + oi] = T.max(
                        T.Cast("float32", acc[r, oi] + T.Cast("float64", b1[oo * V + oi])),
                        T.float32(0),
                    )

    @T.macro
    def conv2_rows(acc, s, hid, g, rows, w2, b2, cond):
        for oo in range(C // V):
            dot3(acc, hid, g, rows, CH, w2, oo)
            for r in T.unroll(rows):
                for oi in T.vectorized(V):
                    # fast tanh exactly as models.vocoder.fastmath.fast_tanh: clamp, square,
                    # rational
                    s[0, oi] = T.Cast("float32", acc[r, oi] + T.Cast("float64", b2[oo * V + oi]))
                    s[0, oi] = T.min(T.max(s[0, oi], T.float32(-clamp)), T.float32(clamp))
                    s[1, oi] = s[0, oi] * s[0, oi]
                    cond[g + r, oo * V + oi] = tanh_rational(s[0, oi], s[1, oi], mad)

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
        acc = T.alloc_buffer((QR, V), "float64", scope="local")
        s = T.alloc_buffer((2, V), "float32", scope="local")
        for qb in range((k + 2) // QR):
            conv1_rows(acc, x, qb * QR, QR, w1, b1, hid)
        for q in range((k + 2) // QR * QR, k + 2):
            conv1_rows(acc, x, q, 1, w1, b1, hid)
        for gb in range(k // QR):
            conv2_rows(acc, s, hid, gb * QR, QR, w2, b2, cond)
        for g in range(k // QR * QR, k):
            conv2_rows(acc, s, hid, g, 1, w2, b2, cond)

    return condition
