"""The TVM whole-frame kernel: one compiled call generates hop_length samples autoregressively.

The call does, for one frame (T samples):
  1. project the conditioning of this frame and the next through W_cond (2 x [3H, C] matvecs;
     per-sample conditioning is their interpolation, so no per-sample matmul is needed);
  2. T times: block-sparse int8 GRU recurrent matvec, gates with fast sigmoid/tanh, block-sparse
     int8 FC1 + ReLU, block-sparse int8 FC2, softmax with fast exp, inverse-CDF sample, feedback
     of the sample, the linear prediction and the excitation;
  3. de-emphasis of the frame's decoded samples into float PCM.
The GRU state, previous sample and excitation, and de-emphasis state are read from and written
back to in/out buffers, so a stream's state survives between calls without copies. The module's
function "condition" is the conditioning network (models/kernel/condition.py), and "frame_b2",
"frame_b4", "frame_b8" advance several streams a frame per call (models/kernel/batch.py).

The math is models/vocoder/reference.py's; tests/models/kernel/test_kernel.py checks them against
each other. Intermediates inside vectorised loops are staged in local buffers: binding them to
Python names there silently computes garbage in TVM 0.27 (see shared TVM notes).
"""

from __future__ import annotations

from types import SimpleNamespace

import tvm
from tvm.script import tirx as T

from models.kernel.int8 import int8_macros
from models.kernel.packing import KernelShape
from models.kernel.tir_math import exp2_poly, fma, multiply_add, tanh_rational
from models.vocoder.excitation import SOURCE_INPUTS, STEP_INPUTS
from models.vocoder.fastmath import EXP_FLOOR, LOG2E, TANH_CLAMP
from models.vocoder.quantize import Q


def frame_stages(shape: KernelShape, variant: str = "generic") -> SimpleNamespace:
    """The stages of a frame as TVMScript macros, for one stream's buffers: the frame kernel
    below inlines them into one loop nest, and the batched kernel (models/kernel/batch.py) calls
    the per-stream ones on each stream's views. Python ints below are compile-time constants.

    One long function on purpose: TVMScript macros close over the shape constants defined at its
    top (H, F, K, R, V, ...); split into module-level functions, every macro would take a dozen
    constants as arguments. Each macro is one stage.
    """
    cfg = shape.config
    H = cfg.hidden_size
    G = 3 * H
    F = cfg.fc_size
    K = cfg.n_classes
    C = cfg.cond_size
    TT = cfg.hop_length
    R = cfg.block_rows
    CB = cfg.block_cols
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
    SRC = shape.source
    mad = multiply_add(variant != "generic")

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

    n_step = len(STEP_INPUTS) if SRC else len(STEP_INPUTS) - len(SOURCE_INPUTS)

    def gate_sum(sc, p0_j, p1_j, w_k):
        # gi at one gate element: the interpolated conditioning projection plus each step input
        # (the sine source's two only when the model uses it: KernelShape.source), summed left to
        # right as reference.run_frame does; w_k(k) is the element's weight of step input k. A
        # plain Python builder like tanh_rational, so each gate's sum stays one expression (split
        # into statements it measured ~0.3 us/sample slower).
        acc = mad(sc[0], p1_j, p0_j)
        for k in range(n_step):
            acc = mad(w_k(k), sc[3 + k], acc)
        return acc

    def gate_input(p0, p1, w_in, sc, g, io, ii):
        # gate g's element io * V + ii from the projections p0, p1 [3H] and w_in [5, 3H]
        j = g * H + io * V + ii
        return gate_sum(sc, p0[j], p1[j], lambda k: w_in[k, j])

    def gate_input_interleaved(gin, _p1, _w_in, sc, g, io, ii):
        # the same from gin (interleave_gate_inputs): p0, p1 and the weights side by side
        grp = io * 3 + g
        return gate_sum(sc, gin[grp, 0, ii], gin[grp, 1, ii], lambda k: gin[grp, 2 + k, ii])

    @T.macro
    def interleave_gate_inputs(p0, p1, w_in, gin):
        # gin[io * 3 + g] = [p0, p1, w_in rows] of gate g's lanes io * V.. io * V + V - 1: what the
        # gate loop reads for lane group io, one contiguous 1.3 KB instead of 21 places in 7
        # arrays. Per sample the kernel reads ~200 KB (int8 blocks, these inputs, row scales) from
        # L2, so how it walks memory shows: -3.9% for the whole kernel call (Zen 5, lone stream).
        for io in range(H // V):
            for g in range(3):
                for ii in T.vectorized(V):
                    gin[io * 3 + g, 0, ii] = p0[g * H + io * V + ii]
                    gin[io * 3 + g, 1, ii] = p1[g * H + io * V + ii]
                for k in range(len(STEP_INPUTS)):
                    for ii in T.vectorized(V):
                        gin[io * 3 + g, 2 + k, ii] = w_in[k, g * H + io * V + ii]

    def gru_update_macro(gate_in):
        # the GRU step with gate inputs gate_in(in0, in1, in2, sc, gate, io, ii): (p0, p1, w_in)
        # as the batched kernel keeps them per stream, or gin three times (gate_input_interleaved)
        @T.macro
        def gru_update(sc, in0, in1, in2, gh, h, s):
            # gates r, z, n and the new state, V lanes at a time; sc[0] = a, and the step inputs
            # sc[3] = previous sample, sc[4] = prediction, sc[5] = previous excitation,
            # sc[6], sc[7] = the sine source
            for io in range(H // V):
                for ii in T.vectorized(V):
                    # s[0] = gi_r + gh_r ; s[1] = gi_z + gh_z (input projection interpolated)
                    s[0, ii] = gate_in(in0, in1, in2, sc, 0, io, ii) + gh[io * V + ii]
                    s[1, ii] = gate_in(in0, in1, in2, sc, 1, io, ii) + gh[H + io * V + ii]
                    # sigmoid(v) = 0.5 + 0.5 tanh(v/2): clamp, square, rational
                    s[0, ii] = T.min(
                        T.max(s[0, ii] * T.float32(0.5), T.float32(-clamp)), T.float32(clamp)
                    )
                    s[1, ii] = T.min(
                        T.max(s[1, ii] * T.float32(0.5), T.float32(-clamp)), T.float32(clamp)
                    )
                    s[2, ii] = s[0, ii] * s[0, ii]
                    s[3, ii] = s[1, ii] * s[1, ii]
                    s[0, ii] = T.float32(0.5) + T.float32(0.5) * tanh_rational(
                        s[0, ii], s[2, ii], mad
                    )
                    s[1, ii] = T.float32(0.5) + T.float32(0.5) * tanh_rational(
                        s[1, ii], s[3, ii], mad
                    )
                    # n = tanh(gi_n + r * gh_n)
                    s[4, ii] = mad(
                        s[0, ii], gh[2 * H + io * V + ii], gate_in(in0, in1, in2, sc, 2, io, ii)
                    )
                    s[4, ii] = T.min(T.max(s[4, ii], T.float32(-clamp)), T.float32(clamp))
                    s[5, ii] = s[4, ii] * s[4, ii]
                    s[4, ii] = tanh_rational(s[4, ii], s[5, ii], mad)
                    h[io * V + ii] = mad(
                        s[1, ii], h[io * V + ii], (T.float32(1) - s[1, ii]) * s[4, ii]
                    )

        return gru_update

    gru_update = gru_update_macro(gate_input)
    gru_update_interleaved = gru_update_macro(gate_input_interleaved)

    @T.macro
    def max_of(x, n, m, dst, at):
        # dst[at] = max(x[0:n]), n a multiple of V: V lanes at a time (m), then across the lanes
        for ii in T.vectorized(V):
            m[ii] = x[ii]
        for ko in range(1, n // V):
            for ii in T.vectorized(V):
                m[ii] = T.max(m[ii], x[ko * V + ii])
        dst[at] = m[0]
        for ii in range(1, V):
            dst[at] = T.max(dst[at], m[ii])

    @T.macro
    def softmax_sample(t, logit, prob, gsum, m, s, sc, si, uniforms, out):
        # softmax numerator with fast exp, from the largest logit
        max_of(logit, K, m, sc, 1)
        for ko in range(K // V):
            for ii in T.vectorized(V):
                s[6, ii] = T.max(logit[ko * V + ii] - sc[1], T.float32(exp_floor)) * T.float32(
                    log2e
                )
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
        # rounded once, as excitation.predict); 0 without LPC
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
    def fc2_input_scale(y1, m, ys):
        # FC2 input scale: ys[1] = max(y1) / 127 this step (y1 >= 0 after the ReLU), ys[0] its
        # inverse (0 for an all-zero y1)
        max_of(y1, F, m, ys, 0)
        ys[1] = ys[0] / T.float32(Q)
        ys[0] = T.if_then_else(ys[0] > T.float32(0), T.float32(Q) / ys[0], T.float32(0))

    q_matvec, quantize4 = int8_macros(variant, R, V, mad)
    return SimpleNamespace(
        project_cond=project_cond,
        gru_update=gru_update,
        gru_update_interleaved=gru_update_interleaved,
        interleave_gate_inputs=interleave_gate_inputs,
        softmax_sample=softmax_sample,
        predict=predict,
        next_sample=next_sample,
        deemphasize=deemphasize,
        fc2_input_scale=fc2_input_scale,
        q_matvec=q_matvec,
        quantize4=quantize4,
    )


def make_frame_kernel(shape: KernelShape, variant: str = "generic") -> tvm.tirx.PrimFunc:
    """Build the PrimFunc for one frame of one stream (the stages of frame_stages, in order)."""
    cfg = shape.config
    H, G, F, K, C = cfg.hidden_size, 3 * cfg.hidden_size, cfg.fc_size, cfg.n_classes, cfg.cond_size
    TT, R = cfg.hop_length, cfg.block_rows
    NH, N1, N2 = shape.nnzb_hh, shape.nnzb_fc1, shape.nnzb_fc2
    V = 16
    KG = K // V
    P = cfg.lpc_order
    PL = max(P, 1)  # the lpc argument is a 1-element placeholder without linear prediction
    st = frame_stages(shape, variant)
    project_cond, softmax_sample = st.project_cond, st.softmax_sample
    gru_update, interleave_gate_inputs = st.gru_update_interleaved, st.interleave_gate_inputs
    predict, next_sample, deemphasize = st.predict, st.next_sample, st.deemphasize
    fc2_input_scale, q_matvec, quantize4 = st.fc2_input_scale, st.q_matvec, st.quantize4

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
        gin = T.alloc_buffer((G // V, 2 + len(STEP_INPUTS), V), "float32")
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
        interleave_gate_inputs(p0, p1, w_in, gin)
        sc[3] = xprev[0]
        sc[5] = xprev[2]
        quantize4(h, H, T.float32(Q), hq8)
        for t in range(TT):
            sc[0] = T.Cast("float32", t) / T.float32(TT)  # interpolation weight a
            q_matvec(
                hh_data,
                hh_idx,
                hh_ptr,
                hq,
                G // R,
                hh_scale,
                hh_corr,
                T.float32(1),
                b_hh,
                gh,
                acc,
                False,
            )
            predict(lpc, xprev, sc, d64)
            sc[6] = src[t, 0]
            sc[7] = src[t, 1]
            gru_update(sc, gin, gin, gin, gh, h, s)
            quantize4(h, H, T.float32(Q), hq8)
            q_matvec(
                fc1_data,
                fc1_idx,
                fc1_ptr,
                hq,
                F // R,
                fc1_scale,
                fc1_corr,
                T.float32(1),
                fc1_b,
                y1,
                acc,
                True,
            )
            fc2_input_scale(y1, m, ys)
            quantize4(y1, F, ys[0], yq8)
            q_matvec(
                fc2_data,
                fc2_idx,
                fc2_ptr,
                yq,
                K // R,
                fc2_scale,
                fc2_corr,
                ys[1],
                fc2_b,
                logit,
                acc,
                False,
            )
            softmax_sample(t, logit, prob, gsum, m, s, sc, si, uniforms, out)
            next_sample(t, out, table, xprev, sig, sc)
        xprev[0] = sc[3]
        xprev[2] = sc[5]
        deemphasize(sig, xprev, pcm, sc)

    return frame_int8
