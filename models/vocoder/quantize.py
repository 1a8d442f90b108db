"""int8 arithmetic of the kernel's sparse matvecs, in numpy.

Sparse weights are stored as int8 with one float scale per row; the matvec input is quantised to
8 bits each step (h with the fixed scale 1/127 since |h| < 1; the FC1 output with a per-step
scale max(y)/127), so each block is an exact integer dot product (VNNI vpdpbusd where the CPU has
it). The kernel computes `float(acc) * scale + bias` and `floor(x * k + 0.5)` with fused
multiply-adds, so the reference rounds those exactly once too (via float64, which is exact here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.vocoder.fastmath import f32, fma32

Q = 127  # largest int8 magnitude used: symmetric, so -128 never occurs


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W [M, K] float -> (int8 [M, K], per-row float32 scale [M]) with W ~ int8 * scale.

    The scale bounds each pair of adjacent weights, |q[2i]| + |q[2i+1]| <= 128, rather than each
    weight: CPUs without VNNI multiply with vpmaddubsw, which sums u8 x s8 products in pairs into a
    saturating int16, and 255 * 128 = 32640 still fits. So every ISA computes the same exact integer
    sums (as LPCNet's weight constraint does). It costs at most one bit on rows whose largest
    weights sit side by side, and nothing on rows whose large weights are isolated.
    """
    m, k = w.shape
    assert k % 2 == 0, "columns pair up"
    pair = np.abs(w.astype(f32)).reshape(m, k // 2, 2).sum(axis=2).max(axis=1)
    scale = np.where(pair > 0, pair / f32(Q), f32(1)).astype(f32)
    # |w0| / s + |w1| / s <= 127, and rounding adds at most 1/2 to each: the pair bound is 128
    wq = np.clip(np.floor(w / scale[:, None] + 0.5), -Q, Q).astype(np.int8)
    return wq, scale


def quantize_unit(x: np.ndarray) -> np.ndarray:
    """|x| < 1 -> int32 in [-127, 127] (scale 1/127), as the kernel rounds it."""
    return np.floor(fma32(x, f32(Q), f32(0.5))).astype(np.int32)


@dataclass(frozen=True)
class QuantizedWeights:
    """The int8 forms of the sparse matrices; derived deterministically from the float weights."""

    hh: np.ndarray
    hh_scale: np.ndarray  # per-row scale / 127: the input h has the fixed scale 1/127
    fc1: np.ndarray
    fc1_scale: np.ndarray  # likewise
    fc2: np.ndarray
    fc2_scale: np.ndarray  # per-row scale; times the per-step input scale max(y)/127

    @classmethod
    def from_weights(cls, weights: dict[str, np.ndarray]) -> QuantizedWeights:
        hh, s_hh = quantize_rows(weights["gru.w_hh"])
        fc1, s_1 = quantize_rows(weights["fc1.weight"])
        fc2, s_2 = quantize_rows(weights["fc2.weight"])
        inv_q = f32(1) / f32(Q)
        return cls(hh, (s_hh * inv_q).astype(f32), fc1, (s_1 * inv_q).astype(f32), fc2, s_2)


def qmatvec(wq: np.ndarray, scale: np.ndarray, xq: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Exact integer W_q x_q, then one rounding: float(acc) * scale + bias."""
    acc = wq.astype(np.int32) @ xq.astype(np.int32)
    return fma32(acc.astype(f32), scale, bias)


def quantize_relu_output(y: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """y >= 0 -> (int32 in [0, 127], scale) with y ~ q * scale; the scale is max(y)/127."""
    m = f32(y.max())
    if m <= 0:
        return np.zeros(y.shape, np.int32), f32(0)
    inv = f32(Q) / m
    return np.floor(fma32(y, inv, f32(0.5))).astype(np.int32), f32(m / f32(Q))
