"""Numpy reference of the vocoder's exact math: the single source of truth.

The TVM kernel (models/kernel/frame.py), the torch training model (models/train/wavernn.py) and the tests are
all checked against these functions. Everything is float32, and the fast exp/tanh approximations
are the ones the kernel uses, written with the same constants and the same order of operations.

Shapes: H = hidden_size, F = fc_size, C = cond_size, K = 256 classes, T = hop_length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.signal import lfilter

from models.dsp.lpc import lpc_from_mel, synthesize
from models.dsp.pitch import mel_pitch, source
from models.vocoder.chain import SynthesisChain
from models.vocoder.config import VocoderConfig

f32 = np.float32

# --- fast math (kernel twins live in models/kernel/frame.py) -------------------------------------------

# tanh(x) ~ x P(x^2) / Q(x^2) on x clamped to +-TANH_CLAMP: a [7/6] odd rational fitted here
# (Lawson's iteratively reweighted least squares, then Nelder-Mead on the max error with the clamp
# point free; numerator scaled by 1 - 3e-7 so |fast_tanh| stays below 1 and a GRU gate can
# never pass 1). Max error 1.1e-5 in float32, under 1/700 of the step between h's int8 levels
# (1/127), and the torch model with exact tanh gives the same logits (tests/models/
# test_wavernn.py). It takes 5 FMAs where Eigen's [13/6] (error 2e-7) took 9, on the three gates
# of every sample: the whole kernel measured 3.19-3.26 against 3.47-3.51 us/sample (AVX2, Zen 3).
TANH_CLAMP = f32(6.3858)
TANH_ALPHA = tuple(f32(c) for c in (0.0014326873933896422, 0.1134428158402443, 0.9999521374702454))
TANH_BETA = tuple(f32(c) for c in (5.132248036747436e-05, 0.017107071057271023, 0.44663215201568474, 1.0))
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


# --- mu-law ----------------------------------------------------------------------------------------

MU = 255


def mulaw_encode(x: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> int class in [0, 255]."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    return np.clip(np.floor((y + 1.0) / 2.0 * MU + 0.5), 0, MU).astype(np.int64)


def mulaw_table() -> np.ndarray:
    """Decoded float value of each of the 256 classes, shape [256] float32."""
    y = 2.0 * np.arange(256, dtype=np.float64) / MU - 1.0
    return (np.sign(y) * ((1.0 + MU) ** np.abs(y) - 1.0) / MU).astype(f32)


def mulaw_decode(k: np.ndarray) -> np.ndarray:
    return mulaw_table()[np.asarray(k, dtype=np.int64)]


# --- pre-emphasis ----------------------------------------------------------------------------------


def preemphasize(audio: np.ndarray, coef: float) -> np.ndarray:
    """Training target domain: x[n] - coef x[n-1] (x[-1] = 0), float32 [L]."""
    x = np.asarray(audio, dtype=np.float64)
    if coef == 0.0:
        return x.astype(f32)
    return lfilter([1.0, -coef], [1.0], x).astype(f32)


class Deemphasis:
    """The inverse filter y[n] = x[n] + coef y[n-1], its state carried from one frame to the next.

    float32 with one fused multiply-add per sample, exactly as the kernel's de-emphasis runs; the
    output is clipped to [-1, 1] while the state keeps the unclipped value, so the filter stays
    the exact inverse of `preemphasize`.
    """

    def __init__(self, coef: float, state: float = 0.0) -> None:
        self.coef = float(f32(coef))
        self._y = f32(state)  # y[-1]: the previous frame's last unclipped output

    @property
    def state(self) -> np.float32:
        """y[-1], the unclipped output the next frame's filter starts from."""
        return self._y

    @state.setter
    def state(self, y: float) -> None:
        self._y = f32(y)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x), f32)
        y, c = self._y, self.coef
        for i, v in enumerate(np.asarray(x, dtype=f32).tolist()):
            y = f32(c * float(y) + v)  # float32 product exact in float64: one rounding, as an FMA
            out[i] = y
        self._y = y
        return np.clip(out, f32(-1), f32(1))


# --- linear prediction ------------------------------------------------------------------------------


def frame_lpc(mel: np.ndarray, config: VocoderConfig) -> np.ndarray:
    """Per-frame predictor coefficients a_1..a_P of the pre-emphasised signal, float32 [N, P]
    ([N, 0] when config.lpc_order is 0): what the kernel and training use (models/dsp/lpc.py)."""
    if not config.lpc_order:
        return np.zeros((mel.shape[0], 0), f32)
    a, _ = lpc_from_mel(mel, config.lpc_order, config.preemphasis, noise_floor=config.lpc_noise_floor)
    return np.ascontiguousarray(a[:, 1:], dtype=f32)


def frame_source(mel: np.ndarray, config: VocoderConfig) -> np.ndarray:
    """The sine source of a whole utterance from its start, float32 [N * hop, 2] (models/dsp/pitch.py):
    what the kernel gets, frame by frame, and training crops from."""
    f0, voicing = mel_pitch(mel)
    return source(f0, voicing, config.hop_length, config.sample_rate)[0]


def predict(lpc: np.ndarray, hist: np.ndarray) -> np.float32:
    """p[n] = -sum_i a_i s[n - i] for hist = [s[n-1], ..., s[n-P]]: float64 products and sum (exact
    products of float32 values), rounded to float32 once, as the kernel computes it."""
    return f32(-np.dot(lpc.astype(np.float64), hist.astype(np.float64)))


def _lpc_prediction(s: np.ndarray, lpc: np.ndarray, hop: int) -> np.ndarray:
    """p[n] = -sum_i a_i s[n - i] for every n of float64 s [L] (zeros before the start)."""
    P = lpc.shape[1]
    past = np.lib.stride_tricks.sliding_window_view(np.concatenate([np.zeros(P), s]), P)[: s.size]
    rows = lpc[np.arange(s.size) // hop].astype(np.float64)  # [L, P]
    return -np.einsum("lp,lp->l", rows, past[:, ::-1])  # past[:, ::-1] = s[n-1], ..., s[n-P]


def ring_through_lpc(d: np.ndarray, lpc: np.ndarray, hop: int, gamma: float) -> np.ndarray:
    """Errors d [L] through each frame's 1/A(z / gamma): d'[n] = d[n] - sum_i a_i gamma^i d'[n-i].

    What a sampler's slips become when the net does not steer back: the prediction rings them at
    the frame's resonances (gamma 1), or, with gamma < 1, at those resonances widened, so they die
    away faster (gamma 0: white, each slip lands once). Bandwidth expansion keeps 1/A stable.
    """
    P = lpc.shape[1]
    a = np.concatenate([np.ones((lpc.shape[0], 1)), lpc * gamma ** np.arange(1, P + 1)], axis=1)
    return synthesize(np.asarray(d, np.float64), a, hop)


def excitation_targets(
    signal: np.ndarray, lpc: np.ndarray, hop: int, noise: np.ndarray | None = None, ring: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher forcing for a pre-emphasised signal s [L] and per-frame coefficients lpc [N, P].

    Returns (classes [L] int64, inputs [L, 3] float32): the mu-law classes of the excitation
    e[n] = s[n] - p[n] (p from the true past, sample n in frame n // hop; with P = 0, e = s), and
    each step's GRU inputs as generation makes them (`STEP_INPUTS`): the previous sample (p + the
    decoded class, clipped), this step's prediction p[n] and the previous decoded excitation,
    all 0 at n = 0 (p is 0 throughout without LPC).

    `noise` [L] (integer mu-law steps, LPCNet's noise injection; LPC only): the past the prediction
    and the inputs see is the signal made from excitation classes off by `noise`, as a sampler's
    slips would make it, while the targets stay e[n] = s[n] - p[n] from that noisy past. So the
    net learns to steer a prediction its own errors have bent back to the true signal, instead
    of compounding them (without it, sampling above T ~0.6 runs away to full scale).
    `ring` > 0: the slips' errors are passed through `ring_through_lpc` with that gamma first, so
    the past is bent the way an uncorrected run bends it, ringing at the frame's resonances
    (a near-silent stretch under a sharp fit is where generation ran away); clipped to [-1, 1] as
    generation's samples are.
    """
    s = np.asarray(signal, dtype=np.float64)
    P = lpc.shape[1]
    table = mulaw_table().astype(np.float64)
    pred = _lpc_prediction(s, lpc, hop) if P else np.zeros_like(s)
    if P and noise is not None:
        # made = p + decode(class + noise) = s + (decode(class + noise) - e): each step's slip lands
        # in the history once and does not compound, since every target corrects the past's slips.
        # (Vectorised: the slip's size follows the class of the excitation from the clean past.)
        slipped = np.clip(mulaw_encode(s - pred) + noise, 0, MU)
        made = pred + table[slipped]
        if ring > 0:
            made = np.clip(s + ring_through_lpc(made - s, lpc, hop, ring), -1.0, 1.0)
        pred = _lpc_prediction(made, lpc, hop)
        classes = mulaw_encode(s - pred)
        drawn = made - pred  # the excitation a sampler drew, seen from the prediction it had
    else:
        classes = mulaw_encode(s - pred)
        drawn = table[classes]
        made = pred + drawn
    inputs = np.zeros((s.size, 3), f32)
    inputs[1:, 0] = np.clip(made[:-1], -1.0, 1.0)
    inputs[:, 1] = pred
    inputs[1:, 2] = drawn[:-1]
    return classes, inputs


SIGNAL_INPUTS = ("gru.w_sample", "gru.w_pred", "gru.w_exc")
"""The per-step inputs made from the signal, in the order of `excitation_targets`' input columns:
the previous sample x[n-1], this step's linear prediction p[n] and the previous excitation e[n-1]
(LPCNet's inputs: the net sees the prediction it corrects and the excitation history where pitch
pulses stand out; p = 0 without LPC)."""
SOURCE_INPUTS = ("gru.w_sin", "gru.w_cos")
"""The per-step inputs made from the mel alone: the sine source at the mel's F0 (models/dsp/pitch.py),
so the net need not count samples to time its pitch pulses."""
STEP_INPUTS = SIGNAL_INPUTS + SOURCE_INPUTS
"""All scalar inputs of a GRU step and their weight columns, in input-column order."""


# --- weights ----------------------------------------------------------------------------------------

WEIGHT_SHAPES = {
    # name: shape as a function of the config
    "cond.conv1.weight": lambda c: (c.cond_hidden, c.n_mels, 3),
    "cond.conv1.bias": lambda c: (c.cond_hidden,),
    "cond.conv2.weight": lambda c: (c.cond_size, c.cond_hidden, 3),
    "cond.conv2.bias": lambda c: (c.cond_size,),
    "gru.w_cond": lambda c: (3 * c.hidden_size, c.cond_size),
    "gru.w_sample": lambda c: (3 * c.hidden_size,),
    "gru.w_pred": lambda c: (3 * c.hidden_size,),
    "gru.w_exc": lambda c: (3 * c.hidden_size,),
    "gru.w_sin": lambda c: (3 * c.hidden_size,),
    "gru.w_cos": lambda c: (3 * c.hidden_size,),
    "gru.b_ih": lambda c: (3 * c.hidden_size,),
    "gru.w_hh": lambda c: (3 * c.hidden_size, c.hidden_size),
    "gru.b_hh": lambda c: (3 * c.hidden_size,),
    "fc1.weight": lambda c: (c.fc_size, c.hidden_size),
    "fc1.bias": lambda c: (c.fc_size,),
    "fc2.weight": lambda c: (c.n_classes, c.fc_size),
    "fc2.bias": lambda c: (c.n_classes,),
}
SPARSE_WEIGHTS = ("gru.w_hh", "fc1.weight", "fc2.weight")
"""Stored dense (zeros outside kept blocks); packed to BSR by models/vocoder/sparsity.py at compile time."""


def upgrade_weights(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Weights saved before the GRU saw p[n] and e[n-1] (kernel ABI < 7) or the sine source
    (ABI < 8): those columns are zero, which is exactly the older model, so it can be compiled
    again or fine-tuned from."""
    out = dict(weights)
    if "gru.w_sample" in out:
        for name in STEP_INPUTS[1:]:
            out.setdefault(name, np.zeros_like(out["gru.w_sample"], dtype=f32))
    return out


def check_weights(weights: dict[str, np.ndarray], config: VocoderConfig) -> None:
    """Raise ValueError unless every tensor is present, float32-castable, finite and well-shaped."""
    missing = set(WEIGHT_SHAPES) - set(weights)
    if missing:
        raise ValueError(f"weights missing tensors: {sorted(missing)}")
    for name, shape_of in WEIGHT_SHAPES.items():
        want = shape_of(config)
        got = tuple(weights[name].shape)
        if got != want:
            raise ValueError(f"weight {name!r} has shape {got}, config needs {want}")
        if not np.all(np.isfinite(weights[name])):
            raise ValueError(f"weight {name!r} has non-finite values")


def random_weights(config: VocoderConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic untrained weights at the config's size and sparsity (blocks pruned at random).

    Scales are chosen so the GRU neither saturates nor dies and the softmax is not one-hot,
    which keeps the sampler exercised the way a trained model would.
    """
    from models.vocoder.sparsity import random_block_mask  # local: sparsity imports this module

    rng = np.random.default_rng(seed)

    def uniform(shape: tuple[int, ...], fan_in: int, gain: float = 1.0) -> np.ndarray:
        bound = gain / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape).astype(f32)

    c = config
    w: dict[str, np.ndarray] = {
        "cond.conv1.weight": uniform(WEIGHT_SHAPES["cond.conv1.weight"](c), 3 * c.n_mels),
        "cond.conv1.bias": np.zeros(c.cond_hidden, f32),
        "cond.conv2.weight": uniform(WEIGHT_SHAPES["cond.conv2.weight"](c), 3 * c.cond_hidden),
        "cond.conv2.bias": np.zeros(c.cond_size, f32),
        "gru.w_cond": uniform((3 * c.hidden_size, c.cond_size), c.cond_size),
        "gru.w_sample": uniform((3 * c.hidden_size,), 1, gain=0.5),
        "gru.b_ih": np.zeros(3 * c.hidden_size, f32),
        "gru.b_hh": np.zeros(3 * c.hidden_size, f32),
        "fc1.bias": np.zeros(c.fc_size, f32),
        "fc2.bias": np.zeros(c.n_classes, f32),
    }
    # Sparse matrices: kept values are scaled up by 1/sqrt(density) so the effective fan-in matches.
    for name, fan_in in (("gru.w_hh", c.hidden_size), ("fc1.weight", c.hidden_size), ("fc2.weight", c.fc_size)):
        shape = WEIGHT_SHAPES[name](c)
        mask = random_block_mask(shape, (c.block_rows, c.block_cols), c.density, rng)
        gain = 3.0 if name == "fc2.weight" else 1.5
        w[name] = (uniform(shape, fan_in, gain=gain / np.sqrt(c.density)) * mask).astype(f32)
    # Drawn last, in the order the inputs arrived, so the weights above are those of the models
    # seeded before these inputs existed.
    for name in STEP_INPUTS[1:]:
        w[name] = uniform((3 * c.hidden_size,), 1, gain=0.5)
    return w


# --- int8 kernel arithmetic -----------------------------------------
#
# Sparse weights are stored as int8 with one float scale per row; the matvec input is quantised to
# 8 bits each step (h with the fixed scale 1/127 since |h| < 1; the FC1 output with a per-step
# scale max(y)/127), so each block is an exact integer dot product (VNNI vpdpbusd where the CPU has
# it). The kernel computes `float(acc) * scale + bias` and `floor(x * k + 0.5)` with fused
# multiply-adds, so the reference rounds those exactly once too (via float64, which is exact here).

Q = 127  # largest int8 magnitude used: symmetric, so -128 never occurs


def fma32(a: np.ndarray, b: np.ndarray | np.float32, c: np.ndarray | np.float32) -> np.ndarray:
    """float32 fused multiply-add: a*b+c rounded once (exact for float32 inputs via float64)."""
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64) + np.asarray(c, np.float64)).astype(f32)


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


# --- conditioning network (numpy, once per chunk of frames) -----------------------------------------


def conv1d_k3(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """'valid' k=3 convolution over time. x [N, Cin] -> [N-2, Cout]; weight [Cout, Cin, 3]."""
    n = x.shape[0] - 2
    out = x[0:n] @ weight[:, :, 0].T + x[1 : n + 1] @ weight[:, :, 1].T + x[2 : n + 2] @ weight[:, :, 2].T
    return (out + bias).astype(f32)


def normalize_mel(mel: np.ndarray, config: VocoderConfig) -> np.ndarray:
    return ((mel.astype(f32) - f32(config.mel_mean)) / f32(config.mel_std)).astype(f32)


@dataclass(frozen=True)
class CondMatrices:
    """The two k=3 convolutions as matrices over flattened windows (one matmul per layer)."""

    w1: np.ndarray  # [3 * n_mels, cond_hidden] float32
    b1: np.ndarray
    w2: np.ndarray  # [3 * cond_hidden, cond_size] float32
    b2: np.ndarray
    w1_64: np.ndarray = field(init=False, repr=False)  # float64 copies for the exact dot products
    b1_64: np.ndarray = field(init=False, repr=False)
    w2_64: np.ndarray = field(init=False, repr=False)
    b2_64: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("w1", "b1", "w2", "b2"):
            object.__setattr__(self, f"{name}_64", getattr(self, name).astype(np.float64))

    @classmethod
    def from_weights(cls, weights: dict[str, np.ndarray]) -> CondMatrices:
        def flat(w: np.ndarray) -> np.ndarray:  # [Cout, Cin, 3] -> [3 * Cin, Cout], tap-major
            return np.ascontiguousarray(w.transpose(2, 1, 0).reshape(-1, w.shape[0]).astype(f32))

        return cls(
            flat(weights["cond.conv1.weight"]),
            weights["cond.conv1.bias"].astype(f32),
            flat(weights["cond.conv2.weight"]),
            weights["cond.conv2.bias"].astype(f32),
        )


def pad_mel(mel: np.ndarray) -> np.ndarray:
    """Repeat the two end frames on each side: [N, M] -> [N + 4, M]. Frame f's conditioning reads
    padded rows f..f+4 (mel frames f-2..f+2, edge-clamped)."""
    return np.concatenate([mel[:1], mel[:1], mel, mel[-1:], mel[-1:]])


def condition_rows(xpad: np.ndarray, m: CondMatrices) -> np.ndarray:
    """Conditioning of k consecutive frames from their padded normalised mel rows [k + 4, n_mels].

    conv1 runs once per mel position (k + 2 of them) and conv2 once per frame, as the TVM
    "condition" function does (models/kernel/frame.py). Dot products accumulate in float64 and round to
    float32 once per output: float32 products are exact in float64, so the result does not depend
    on the summation order and the kernel and numpy's BLAS agree bit for bit; nor does it depend on
    how a stream splits frames into calls, since every output is the same dot product.
    """
    x = np.ascontiguousarray(xpad, dtype=np.float64)
    k = x.shape[0] - 4
    cols = np.lib.stride_tricks.as_strided(x, (k + 2, 3 * x.shape[1]), (x.strides[0], x.strides[1]))
    h = np.maximum((cols @ m.w1_64 + m.b1_64).astype(f32), f32(0)).astype(np.float64)  # [k + 2, CH]
    cols2 = np.lib.stride_tricks.as_strided(h, (k, 3 * h.shape[1]), (h.strides[0], h.strides[1]))
    return fast_tanh((cols2 @ m.w2_64 + m.b2_64).astype(f32))


def condition(mel: np.ndarray, weights: dict[str, np.ndarray], config: VocoderConfig) -> np.ndarray:
    """Log-mel [N, n_mels] -> conditioning [N, cond_size]; two frames of look-ahead per frame."""
    m = CondMatrices.from_weights(weights)
    return condition_rows(pad_mel(normalize_mel(mel, config)), m).astype(f32)


# --- the autoregressive frame -----------------------------------------------------------------------


@dataclass
class FrameState:
    """What a stream carries from one frame to the next."""

    h: np.ndarray  # [H] float32 GRU state
    x: float = 0.0  # previous sample's value (input to the next step)
    hist: np.ndarray = field(default_factory=lambda: np.zeros(0, f32))  # [P] s[n-1], ..., s[n-P]
    e: float = 0.0  # previous sample's decoded excitation (input to the next step)

    @classmethod
    def zeros(cls, config: VocoderConfig) -> FrameState:
        return cls(h=np.zeros(config.hidden_size, f32), x=0.0, hist=np.zeros(config.lpc_order, f32))

    def copy(self) -> FrameState:
        return FrameState(h=self.h.copy(), x=self.x, hist=self.hist.copy(), e=self.e)


@dataclass
class FrameTrace:
    """Per-step internals, for tests that must tell a CDF-boundary tie from a real mismatch."""

    cdf_margin: list[float] = field(default_factory=list)


def sample_from_logits(logits: np.ndarray, u: float) -> tuple[int, float]:
    """Inverse-CDF sample: the first class whose running sum exceeds u * total.

    Returns (class, margin) where margin is the distance of u*total to the nearest CDF edge,
    relative to total: a tiny margin means float rounding may legitimately pick a neighbour.
    """
    p = fast_exp(logits - logits.max())
    cdf = np.cumsum(p, dtype=f32)
    target = f32(u) * cdf[-1]
    k = int(np.searchsorted(cdf, target, side="right"))
    k = min(k, len(cdf) - 1)
    margin = float(np.min(np.abs(cdf - target)) / cdf[-1])
    return k, margin


def project_conditioning(cond_pair: np.ndarray, w_cond: np.ndarray) -> np.ndarray:
    """cond_pair [2, C] times w_cond [3H, C] transposed, one fused multiply-add per input column
    in column order, as the kernel accumulates it: a BLAS matmul sums in an order of its own,
    which differs in the last bit from one CPU to the next."""
    cond_pair = cond_pair.astype(f32)
    acc = np.zeros((cond_pair.shape[0], w_cond.shape[0]), f32)
    for c in range(cond_pair.shape[1]):
        acc = fma32(cond_pair[:, c : c + 1], w_cond[:, c], acc)
    return acc


def gate_inputs(
    base: np.ndarray, slope: np.ndarray, a: np.float32, w_steps: list[np.ndarray], values: list
) -> np.ndarray:
    """The GRU's input-side gates [3H] at interpolation weight a in [0, 1) of the frame: the
    conditioning base + a * slope (project_conditioning of this frame and the next, b_ih in base),
    then each step input (STEP_INPUTS' weights [3H] times its value), one FMA each, in order."""
    gi = fma32(slope, a, base)
    for w_k, v in zip(w_steps, values, strict=True):
        gi = fma32(w_k, v, gi)
    return gi


def gru_step(gi: np.ndarray, gh: np.ndarray, h: np.ndarray) -> np.ndarray:
    """One GRU update: h [H] from the input gates gi [3H] and the recurrent gates gh [3H]
    (W_hh h + b_hh, int8 in generation, float in teacher forcing), as the kernel computes it."""
    H = h.shape[0]
    r = fast_sigmoid(gi[:H] + gh[:H])
    z = fast_sigmoid(gi[H : 2 * H] + gh[H : 2 * H])
    n = fast_tanh(fma32(r, gh[2 * H :], gi[2 * H :]))
    return fma32(z, h, (f32(1) - z) * n)


def frame_gates(
    cond_pair: np.ndarray, weights: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(base, slope) [3H] of a frame from its conditioning and the next's, cond_pair [2, C]:
    (1 - a) P0 + a P1 + b_ih written as base + a * slope, one FMA per step in the kernel."""
    proj = project_conditioning(cond_pair, weights["gru.w_cond"])  # [2, 3H]
    return (proj[0] + weights["gru.b_ih"]).astype(f32), (proj[1] - proj[0]).astype(f32)


def run_frame(
    weights: dict[str, np.ndarray],
    config: VocoderConfig,
    cond_pair: np.ndarray,
    uniforms: np.ndarray,
    state: FrameState,
    trace: FrameTrace | None = None,
    quantized: QuantizedWeights | None = None,
    lpc: np.ndarray | None = None,
    source: np.ndarray | None = None,
    logit_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one frame (hop_length samples) and advance `state` in place.

    cond_pair: [2, C] conditioning of this frame and the next; per-sample conditioning is their
        linear interpolation, so its GRU projection is two matvecs per frame, not one per sample.
    uniforms:  [T] float32 in [0, 1), one per sample (the stream's RNG lives outside).
    quantized: int8 forms of the sparse weights (derived here when not given).
    lpc:       [P] float32 predictor coefficients of this frame (config.lpc_order > 0).
    source:    [T, 2] float32 sine source of this frame (models/dsp/pitch.py); None: zeros.
    logit_scale: this frame's factor on the logits (frame_logit_scales): FC2's row scales and
               bias are multiplied by it, as the runtime does with its arguments.
    returns:   ([T] int32 mu-law classes drawn, [T] float32 samples of the pre-emphasised signal:
               the decoded class, plus the linear prediction when P > 0).
    """
    T, P = config.hop_length, config.lpc_order
    assert cond_pair.shape == (2, config.cond_size)
    assert uniforms.shape == (T,)
    base, slope = frame_gates(cond_pair, weights)
    w_steps = [weights[k] for k in STEP_INPUTS]
    source = np.zeros((T, 2), f32) if source is None else source.astype(f32)
    assert source.shape == (T, 2)
    q = quantized if quantized is not None else QuantizedWeights.from_weights(weights)
    b_hh, b1 = weights["gru.b_hh"], weights["fc1.bias"]
    s = f32(logit_scale)
    b2 = (weights["fc2.bias"] * s).astype(f32) if logit_scale != 1.0 else weights["fc2.bias"]
    fc2_scale = (q.fc2_scale * s).astype(f32) if logit_scale != 1.0 else q.fc2_scale
    if P:
        assert lpc is not None and lpc.shape == (P,), "an LPC model needs the frame's coefficients"
    table = mulaw_table()
    out = np.empty(T, np.int32)
    signal = np.empty(T, f32)
    h, x, e, hist = state.h.astype(f32), f32(state.x), f32(state.e), state.hist.astype(f32).copy()
    for t in range(T):
        p = predict(lpc, hist) if P else f32(0)
        gi = gate_inputs(base, slope, f32(t) / f32(T), w_steps, [x, p, e, *source[t]])
        h = gru_step(gi, qmatvec(q.hh, q.hh_scale, quantize_unit(h), b_hh), h)
        y = np.maximum(qmatvec(q.fc1, q.fc1_scale, quantize_unit(h), b1), f32(0))
        yq, y_scale = quantize_relu_output(y)
        logits = qmatvec(q.fc2, (fc2_scale * y_scale).astype(f32), yq, b2)
        k, margin = sample_from_logits(logits, float(uniforms[t]))
        if trace is not None:
            trace.cdf_margin.append(margin)
        out[t] = k
        e = table[k]
        if P:
            x = np.clip(p + e, f32(-1), f32(1))
            hist = np.concatenate([[x], hist[:-1]]).astype(f32)
        else:
            x = e
        signal[t] = x
    state.h, state.x, state.hist, state.e = h, float(x), hist, float(e)
    return out, signal


def vocode(
    weights: dict[str, np.ndarray], config: VocoderConfig, mel: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Whole-utterance reference: log-mel [N, n_mels] -> float32 audio [N * hop_length]: each
    frame by run_frame and de-emphasis, then the post-kernel chain (models/vocoder/chain.py)."""
    n, T = mel.shape[0], config.hop_length
    if n == 0:
        return np.zeros(0, f32)
    cond = condition(mel, weights, config)
    cond = np.concatenate([cond, cond[-1:]])  # the last frame interpolates towards itself
    rng = np.random.default_rng(seed)
    state = FrameState.zeros(config)
    quantized = QuantizedWeights.from_weights(weights)
    deemphasis = Deemphasis(config.preemphasis)
    lpc = frame_lpc(mel, config)
    f0, voicing = mel_pitch(mel)  # for the sine source (as frame_source) and the postfilter
    src = source(f0, voicing, T, config.sample_rate)[0]
    scales = frame_logit_scales(config, voicing)
    chain = SynthesisChain(config, lambda k: mel[k] if k < n else None)
    saved: list[tuple[FrameState, np.float32]] = []

    def save() -> None:
        saved[:] = [(state.copy(), deemphasis.state)]

    def restore() -> None:
        before, y_before = saved[0]
        state.h, state.x, state.hist, state.e = before.h, before.x, before.hist, before.e
        deemphasis.state = y_before

    out = []
    for f in range(n):

        def run(f: int = f) -> np.ndarray:
            u = rng.random(T, dtype=np.float32)
            _, signal = run_frame(
                weights, config, cond[f : f + 2], u, state, quantized=quantized, lpc=lpc[f],
                source=src[f * T : (f + 1) * T], logit_scale=float(scales[f]),
            )  # fmt: skip
            return deemphasis(signal)

        pcm = chain.draw(f, run, save, restore)
        out.append(chain.frame(pcm, f0[f : f + 1], voicing[f : f + 1]))
    out.append(chain.finish())
    return np.concatenate(out)


def frame_logit_scales(config: VocoderConfig, voicing: np.ndarray) -> np.ndarray:
    """float32 [N] factor on each frame's logits from its voicing in [0, 1] (mel_pitch): the
    voicing-dependent temperature of VocoderConfig.voiced_logit_scale / unvoiced_logit_scale.
    The one formula the runtime and vocode() share, so both sample the same distribution."""
    v = np.clip(np.asarray(voicing, f32), f32(0), f32(1))
    lo, hi = f32(config.unvoiced_logit_scale), f32(config.voiced_logit_scale)
    return (lo + (hi - lo) * v).astype(f32)


# --- teacher forcing (training checks; appended for models/train/wavernn.py's tests) --------------------


def teacher_forced_logits(
    weights: dict[str, np.ndarray], config: VocoderConfig, mel: np.ndarray, audio: np.ndarray
) -> np.ndarray:
    """Logits the reference computes when fed the true previous sample instead of its own draw.

    mel: log-mel [N, n_mels]; audio: float [L] with L <= N * hop_length.
    Inputs at sample n are the step inputs as generation makes them from the true past
    (`excitation_targets`: previous sample, prediction, previous excitation) and the sine source
    (`frame_source`), exactly what training uses. Returns float32 [L, 256] logits: the same GRU
    step (gate_inputs, gru_step) as run_frame, with float matvecs in place of the int8 ones.
    """
    H, T = config.hidden_size, config.hop_length
    audio = np.asarray(audio, dtype=f32)
    assert audio.ndim == 1 and audio.shape[0] <= mel.shape[0] * T
    cond = condition(mel, weights, config)
    cond = np.concatenate([cond, cond[-1:]])  # the last frame interpolates towards itself
    e = preemphasize(audio, config.preemphasis)
    _, inputs = excitation_targets(e, frame_lpc(mel, config), T)
    inputs = np.concatenate([inputs, frame_source(mel, config)[: audio.shape[0]]], axis=1)
    w_steps = [weights[k] for k in STEP_INPUTS]
    w_hh, b_hh = weights["gru.w_hh"], weights["gru.b_hh"]
    w1, b1, w2, b2 = (weights[k] for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"))
    h = np.zeros(H, f32)
    out = np.empty((audio.shape[0], config.n_classes), f32)
    for n in range(audio.shape[0]):
        f, t = divmod(n, T)
        if t == 0:
            base, slope = frame_gates(cond[f : f + 2], weights)
        gi = gate_inputs(base, slope, f32(t) / f32(T), w_steps, list(inputs[n]))
        h = gru_step(gi, (w_hh @ h + b_hh).astype(f32), h)
        y = np.maximum(w1 @ h + b1, f32(0))
        out[n] = (w2 @ y + b2).astype(f32)
    return out
