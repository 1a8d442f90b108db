"""The fast float32 math the kernel computes, in numpy: tanh, sigmoid and exp approximations and
fused multiply-add, with the kernel's constants and order of operations (kernel twins:
models/kernel/tir_math.py)."""

from __future__ import annotations

import numpy as np

f32 = np.float32

# tanh(x) ~ x P(x^2) / Q(x^2) on x clamped to +-TANH_CLAMP: a [7/6] odd rational fitted here
# (Lawson's iteratively reweighted least squares, then Nelder-Mead on the max error with the clamp
# point free; numerator scaled by 1 - 3e-7 so |fast_tanh| stays below 1 and a GRU gate can
# never pass 1). Max error 1.1e-5 in float32, under 1/700 of the step between h's int8 levels
# (1/127), and the torch model with exact tanh gives the same logits (tests/models/
# test_wavernn.py). It takes 5 FMAs where Eigen's [13/6] (error 2e-7) took 9, on the three gates
# of every sample: the whole kernel measured 3.19-3.26 against 3.47-3.51 us/sample (AVX2, Zen 3).
TANH_CLAMP = f32(6.3858)
TANH_ALPHA = tuple(f32(c) for c in (0.0014326873933896422, 0.1134428158402443, 0.9999521374702454))
TANH_BETA = tuple(
    f32(c) for c in (5.132248036747436e-05, 0.017107071057271023, 0.44663215201568474, 1.0)
)
LOG2E = f32(1.4426950408889634)
# 2^f on f in [0, 1): degree-5 least-squares fit on Chebyshev nodes (rel. error 1.2e-7).
EXP2_POLY = tuple(
    f32(c)
    for c in (
        0.9999998807907104,
        0.6931546330451965,
        0.24014078080654144,
        0.05586325749754906,
        0.008946225047111511,
        0.0018951086094602942,
    )
)
EXP_FLOOR = f32(-87.0)  # below this exp() is 0 for our purposes (softmax after max-subtraction)


def fast_tanh(x: np.ndarray) -> np.ndarray:
    """tanh(x) via a clamped rational polynomial; float32 in, float32 out."""
    p, q = _tanh_rational(x)
    return (p / q).astype(f32)


def _tanh_rational(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, Q) with tanh(x) ~ P / Q on the clamped x, Horner steps fused as the kernel's are."""
    x = np.clip(x.astype(f32), -TANH_CLAMP, TANH_CLAMP)
    x2 = x * x
    p = np.full_like(x, TANH_ALPHA[0])
    for c in TANH_ALPHA[1:]:
        p = fma32(p, x2, c)
    q = np.full_like(x, TANH_BETA[0])
    for c in TANH_BETA[1:]:
        q = fma32(q, x2, c)
    return (p * x).astype(f32), q


def fast_sigmoid(x: np.ndarray) -> np.ndarray:
    """sigmoid(x) = 0.5 + 0.5 * tanh(x / 2): one approximation to keep accurate, not two."""
    return (f32(0.5) + f32(0.5) * fast_tanh(x.astype(f32) * f32(0.5))).astype(f32)


def fast_exp(x: np.ndarray) -> np.ndarray:
    """exp(x) for x <= 0 as 2^floor(t) (exponent bits) * poly(frac(t)), t = x*log2(e)."""
    t = np.maximum(x.astype(f32), EXP_FLOOR) * LOG2E
    ti = np.floor(t)
    frac = (t - ti).astype(f32)
    c = EXP2_POLY
    p = np.full_like(frac, c[-1])
    for coef in reversed(c[:-1]):
        p = fma32(p, frac, coef)  # fused, as the kernel's Horner steps
    scale = ((ti.astype(np.int32) + 127) << 23).astype(np.int32).view(f32)
    return (p * scale).astype(f32)


def fma32(a: np.ndarray, b: np.ndarray | np.float32, c: np.ndarray | np.float32) -> np.ndarray:
    """float32 fused multiply-add: a*b+c rounded once (exact for float32 inputs via float64)."""
    return (
        np.asarray(a, np.float64) * np.asarray(b, np.float64) + np.asarray(c, np.float64)
    ).astype(f32)
