"""The compiled frame function's calling convention: its shape, and the weights packed as its
arguments (block-sparse int8 rows, scales, offsets). numpy only: loading an artefact needs no
TVM."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.vocoder.conditioning import CondMatrices
from models.vocoder.config import NetConfig, VocoderConfig
from models.vocoder.excitation import SOURCE_INPUTS, STEP_INPUTS
from models.vocoder.mulaw import mulaw_table
from models.vocoder.quantize import QuantizedWeights
from models.vocoder.sparsity import BSR, to_bsr

# The calling convention of the compiled frame function: its arguments, their layouts and the
# quantisation they assume. Bump it whenever those change; the loader refuses modules built for
# another ABI rather than feed them mis-shaped weights. 2: one int32 of 4 weights per block row on
# every ISA, weight pairs bounded for vpmaddubsw. 3: the module also holds "condition".
# 4: xprev holds [previous sample, de-emphasis state] and the frame also writes float PCM.
# 5: "condition" computes k frames per call from padded mel rows (cond, x, hid, weights).
# 6: the frame takes lpc [max(P, 1)] after cond, and xprev is [2 + P] (+ the LPC history).
# 7: the GRU also sees p[n] and e[n-1]: w_sample becomes w_in [3, 3H] (excitation.STEP_INPUTS)
#    and xprev is [3 + P]: [previous sample, de-emphasis state, previous excitation, history].
# 8: the GRU also sees the sine source (models/dsp/pitch.py): the frame takes src [T, 2] after lpc,
#    and w_in is [5, 3H].
# 9: tanh is fastmath.TANH_*'s 5-FMA rational, not Eigen's 9-FMA one. The arguments are those of
#    8, but a module must compute its reference's math, and the host-compile cache is keyed by ABI.
# 10: the module also holds the batched frame functions (models/kernel/batch.py). "main" and
#    "condition" are those of 9, so ABI 9 artefacts still load, without batching.
KERNEL_ABI = 10
COMPATIBLE_ABIS = frozenset({9, 10})
"""ABIs whose "main" and "condition" this Sparrow runs (older ones lack the batched functions)."""


@dataclass(frozen=True)
class KernelShape:
    """Everything the compiled function is specialised on (weights are arguments, not constants)."""

    config: NetConfig  # the net alone: synthesis settings never reach the module
    nnzb_hh: int
    nnzb_fc1: int
    nnzb_fc2: int
    source: bool = True  # False: the sine-source weights are all zero, so its terms are left out


def condition_args(weights: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Weight arguments of the "condition" function, after (cond, x, hid). float32: float64
    copies measured slower (twice the bytes to stream from cache for no fewer FMAs)."""
    m = CondMatrices.from_weights(weights)
    return [m.w1, m.b1, m.w2, m.b2]


STATE_ARGS = ("cond", "lpc", "src", "uniforms", "h", "xprev", "out", "pcm")
"""Per-call arguments, in order; the weight arguments follow them."""


def pack_weights(
    weights: dict[str, np.ndarray], config: NetConfig
) -> tuple[KernelShape, list[np.ndarray]]:
    """Reference weights -> (kernel shape, weight arguments in the kernel's order). The int8
    layout is the same on every ISA level."""
    block = (config.block_rows, config.block_cols)
    packed = {
        name: to_bsr(weights[name], block) for name in ("gru.w_hh", "fc1.weight", "fc2.weight")
    }
    q = QuantizedWeights.from_weights(weights)
    sparse = [
        *int8_args(q.hh, q.hh_scale, packed["gru.w_hh"]),
        *int8_args(q.fc1, q.fc1_scale, packed["fc1.weight"]),
        weights["fc1.bias"].astype(np.float32),
        *int8_args(q.fc2, q.fc2_scale, packed["fc2.weight"]),
    ]
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
        config=config.net if isinstance(config, VocoderConfig) else config,
        nnzb_hh=packed["gru.w_hh"].data.shape[0],
        nnzb_fc1=packed["fc1.weight"].data.shape[0],
        nnzb_fc2=packed["fc2.weight"].data.shape[0],
        source=any(np.any(weights[k] != 0) for k in SOURCE_INPUTS),
    )
    return shape, args


def logit_arg_positions(config: NetConfig) -> tuple[int, int]:
    """Positions, among pack_weights' arguments, of the two arrays the logits are linear in:
    FC2's row scales and its bias. Multiplying both by s multiplies
    the logits by s, the frame's sampling temperature by 1 / s, with the module unchanged
    (VocoderConfig.voiced_logit_scale; reference.run_frame's logit_scale does the same)."""
    per_matrix = 5  # data, indices, indptr, scale, corr
    fc2 = 4 + 2 * per_matrix + 1  # after w_cond, step inputs, b_ih, b_hh, W_hh, FC1, FC1's bias
    return fc2 + 3, fc2 + per_matrix


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
    return [
        np.ascontiguousarray(packed),
        pattern.indices,
        pattern.indptr,
        scale.astype(np.float32),
        corr,
    ]
