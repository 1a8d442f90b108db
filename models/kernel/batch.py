"""The batched frame kernel: one call advances B streams by one frame each.

The int8 block-sparse matvecs of B streams become one small SpMM (int8.int8_spmm_macro): each
weight block is loaded once and used for all B streams. That is where a lone stream's frame spends
most of its time (the weights do not fit in L1, so a B = 1 frame streams them from L2 every
sample); the conditioning projection's W_cond is shared the same way. Everything else runs per
stream, by the very macros of the B = 1 kernel (frame.frame_stages) on views of that stream's
rows, so each stream's samples, state and PCM are those B separate B = 1 calls make, bit for bit
(tests/models/kernel/test_batch.py).

Measured on the shipped voice (`sparrow bench --batch 1,2,4,8`, Zen 5): with VNNI a stream's
sample costs 1.53 µs alone and 0.87 at B = 8, of which ~0.55 is the per-stream work (gates,
softmax, sampling). The AVX2 module gains little (1.80 -> 1.67): its int8 block takes four
multiplies per stream where VNNI takes one, so its matvecs are bound by arithmetic, not loads.

Arguments are those of the B = 1 frame with a leading B axis on every per-stream one, plus
logit_scale [B] after pcm: each stream's factor on FC2's row scales and bias (a B = 1 stream passes
its own scaled copies of those two weight arguments instead; packing.logit_arg_positions).
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from models.kernel.frame import frame_stages
from models.kernel.int8 import int8_spmm_macro
from models.kernel.packing import KernelShape
from models.kernel.tir_math import multiply_add
from models.vocoder.quantize import Q

BATCH_SIZES = (2, 4, 8)
"""The B of the batched functions every module holds ("frame_b2", ...); B = 1 is "main"."""


def batch_function_name(batch: int) -> str:
    return f"frame_b{batch}"


def make_batch_kernel(shape: KernelShape, variant: str, batch: int) -> tvm.tirx.PrimFunc:
    """The PrimFunc advancing `batch` streams (a compile-time constant) by one frame each."""
    cfg = shape.config
    B = batch
    H, G, F, K, C = cfg.hidden_size, 3 * cfg.hidden_size, cfg.fc_size, cfg.n_classes, cfg.cond_size
    TT, R = cfg.hop_length, cfg.block_rows
    NH, N1, N2 = shape.nnzb_hh, shape.nnzb_fc1, shape.nnzb_fc2
    V = 16
    KG = K // V
    P = cfg.lpc_order
    PL = max(P, 1)
    X = 3 + P  # xprev per stream
    st = frame_stages(shape, variant)
    gru_update, softmax_sample = st.gru_update, st.softmax_sample
    predict, next_sample, deemphasize = st.predict, st.next_sample, st.deemphasize
    fc2_input_scale, quantize4 = st.fc2_input_scale, st.quantize4
    mad = multiply_add(variant != "generic")
    q_spmm = int8_spmm_macro(variant, R, B, mad)
    QB = max(1, 4 // B) if variant == "vnni" else 1

    @T.macro
    def project_cond_batch(cond, w_cond_t, b_ih, p0, p1, pacc):
        # frame.project_cond for every stream with each row of W_cond loaded once for all of
        # them (0.8 MB a frame, from L2/L3): per stream the same FMAs in the same order
        for jo in range(G // V):
            for a in range(2 * B):
                for ji in T.vectorized(V):
                    pacc[a, ji] = T.float32(0)
            for c in range(C):
                for b in T.unroll(B):
                    for ji in T.vectorized(V):
                        pacc[2 * b, ji] = mad(
                            cond[b, 0, c], w_cond_t[c, jo * V + ji], pacc[2 * b, ji]
                        )
                        pacc[2 * b + 1, ji] = mad(
                            cond[b, 1, c], w_cond_t[c, jo * V + ji], pacc[2 * b + 1, ji]
                        )
            for b in range(B):
                for ji in T.vectorized(V):
                    p1[b, jo * V + ji] = pacc[2 * b + 1, ji] - pacc[2 * b, ji]
                    p0[b, jo * V + ji] = pacc[2 * b, ji] + b_ih[jo * V + ji]

    @T.prim_func
    def frame_batch(
        cond: T.Buffer((B, 2, C), "float32"),
        lpc: T.Buffer((B, PL), "float32"),
        src: T.Buffer((B, TT, 2), "float32"),
        uniforms: T.Buffer((B, TT), "float32"),
        h: T.Buffer((B, H), "float32"),
        xprev: T.Buffer((B, X), "float32"),
        out: T.Buffer((B, TT), "int32"),
        pcm: T.Buffer((B, TT), "float32"),
        logit_scale: T.Buffer((B,), "float32"),
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
        T.func_attr({"global_symbol": "frame_batch", "tirx.noalias": True})
        p0 = T.alloc_buffer((B, G), "float32")
        p1 = T.alloc_buffer((B, G), "float32")
        gh = T.alloc_buffer((B, G), "float32")
        y1 = T.alloc_buffer((B, F), "float32")
        logit = T.alloc_buffer((B, K), "float32")
        prob = T.alloc_buffer((K,), "float32")
        gsum = T.alloc_buffer((KG,), "float32")
        s = T.alloc_buffer((8, V), "float32", scope="local")
        m = T.alloc_buffer((V,), "float32", scope="local")
        sc = T.alloc_buffer((8,), "float32", scope="local")
        sig = T.alloc_buffer((B, TT), "float32")
        d64 = T.alloc_buffer((1,), "float64", scope="local")
        si = T.alloc_buffer((2,), "int32", scope="local")
        acc = T.alloc_buffer((B * QB, R), "int32", scope="local")
        hq8 = T.alloc_buffer((B, H), "uint8")
        hq = T.decl_buffer((B * H // 4, 1), "int32", data=hq8.data)
        yq8 = T.alloc_buffer((B, F), "uint8")
        yq = T.decl_buffer((B * F // 4, 1), "int32", data=yq8.data)
        ys = T.alloc_buffer((2,), "float32", scope="local")
        yscale = T.alloc_buffer((B,), "float32")  # each stream's FC2 input scale this step
        pred = T.alloc_buffer((B,), "float32")  # each stream's prediction this step
        pacc = T.alloc_buffer((2 * B, V), "float32")  # project_cond_batch's accumulators
        project_cond_batch(cond, w_cond_t, b_ih, p0, p1, pacc)
        for b in range(B):
            hb = T.decl_buffer((H,), "float32", data=h.data, elem_offset=b * H)
            hq8b = T.decl_buffer((H,), "uint8", data=hq8.data, elem_offset=b * H)
            quantize4(hb, H, T.float32(Q), hq8b)
        for t in range(TT):
            sc[0] = T.Cast("float32", t) / T.float32(TT)  # interpolation weight a, every stream's
            q_spmm(hh_data, hh_idx, hh_ptr, hq, H // 4, G // R, hh_scale, hh_corr, b_hh, gh, acc,
                   False, False, yscale, logit_scale)  # fmt: skip
            for b in range(B):
                # this stream's step inputs: its previous sample and excitation (sc[3], sc[5],
                # kept in its xprev between steps), its prediction (kept in pred until its sample
                # is drawn) and its source
                xb = T.decl_buffer((X,), "float32", data=xprev.data, elem_offset=b * X)
                lpcb = T.decl_buffer((PL,), "float32", data=lpc.data, elem_offset=b * PL)
                p0b = T.decl_buffer((G,), "float32", data=p0.data, elem_offset=b * G)
                p1b = T.decl_buffer((G,), "float32", data=p1.data, elem_offset=b * G)
                ghb = T.decl_buffer((G,), "float32", data=gh.data, elem_offset=b * G)
                hb = T.decl_buffer((H,), "float32", data=h.data, elem_offset=b * H)
                hq8b = T.decl_buffer((H,), "uint8", data=hq8.data, elem_offset=b * H)
                sc[3] = xb[0]
                sc[5] = xb[2]
                predict(lpcb, xb, sc, d64)
                pred[b] = sc[4]
                sc[6] = src[b, t, 0]
                sc[7] = src[b, t, 1]
                gru_update(sc, p0b, p1b, w_in, ghb, hb, s)
                quantize4(hb, H, T.float32(Q), hq8b)
            q_spmm(fc1_data, fc1_idx, fc1_ptr, hq, H // 4, F // R, fc1_scale, fc1_corr, fc1_b, y1,
                   acc, True, False, yscale, logit_scale)  # fmt: skip
            for b in range(B):
                y1b = T.decl_buffer((F,), "float32", data=y1.data, elem_offset=b * F)
                yq8b = T.decl_buffer((F,), "uint8", data=yq8.data, elem_offset=b * F)
                fc2_input_scale(y1b, m, ys)
                yscale[b] = ys[1]
                quantize4(y1b, F, ys[0], yq8b)
            q_spmm(fc2_data, fc2_idx, fc2_ptr, yq, F // 4, K // R, fc2_scale, fc2_corr, fc2_b,
                   logit, acc, False, True, yscale, logit_scale)  # fmt: skip
            for b in range(B):
                xb = T.decl_buffer((X,), "float32", data=xprev.data, elem_offset=b * X)
                logitb = T.decl_buffer((K,), "float32", data=logit.data, elem_offset=b * K)
                ub = T.decl_buffer((TT,), "float32", data=uniforms.data, elem_offset=b * TT)
                outb = T.decl_buffer((TT,), "int32", data=out.data, elem_offset=b * TT)
                sigb = T.decl_buffer((TT,), "float32", data=sig.data, elem_offset=b * TT)
                sc[4] = pred[b]
                sc[5] = xb[2]
                softmax_sample(t, logitb, prob, gsum, m, s, sc, si, ub, outb)
                next_sample(t, outb, table, xb, sigb, sc)
                xb[0] = sc[3]
                xb[2] = sc[5]
        for b in range(B):
            sigb = T.decl_buffer((TT,), "float32", data=sig.data, elem_offset=b * TT)
            xb = T.decl_buffer((X,), "float32", data=xprev.data, elem_offset=b * X)
            pcmb = T.decl_buffer((TT,), "float32", data=pcm.data, elem_offset=b * TT)
            deemphasize(sigb, xb, pcmb, sc)

    return frame_batch
