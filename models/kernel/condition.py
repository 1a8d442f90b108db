"""The conditioning network as a TVM function ("condition" in every compiled module)."""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from models.kernel.tir_math import multiply_add, tanh_rational
from models.vocoder.config import NetConfig
from models.vocoder.fastmath import TANH_CLAMP


def make_condition_kernel(cfg: NetConfig, fused: bool = True) -> tvm.tirx.PrimFunc:
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
                acc[oi] = acc[oi] + T.Cast("float64", src[row + i // width, i % width]) * T.Cast(
                    "float64", w[i, oo * V + oi]
                )

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
                        T.Cast("float32", acc[oi] + T.Cast("float64", b1[oo * V + oi])),
                        T.float32(0),
                    )
        for g in range(k):
            for oo in range(C // V):
                dot3(acc, hid, g, CH, w2, oo)
                for oi in T.vectorized(V):
                    # fast tanh exactly as models.vocoder.fastmath.fast_tanh: clamp, square,
                    # rational
                    s[0, oi] = T.Cast("float32", acc[oi] + T.Cast("float64", b2[oo * V + oi]))
                    s[0, oi] = T.min(T.max(s[0, oi], T.float32(-clamp)), T.float32(clamp))
                    s[1, oi] = s[0, oi] * s[0, oi]
                    cond[g, oo * V + oi] = tanh_rational(s[0, oi], s[1, oi], mad)

    return condition
