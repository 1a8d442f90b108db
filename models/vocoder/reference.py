"""Numpy reference of the vocoder's exact math, the single source of truth: one frame (run_frame,
with the one GRU step gate_inputs + gru_step), whole utterances (vocode, through the post-kernel
chain of models/vocoder/chain.py) and teacher forcing (training checks).

The TVM kernel (models/kernel/frame.py), the torch training model (models/train/wavernn.py) and
the tests are all checked against it. Everything is float32, and the fast exp/tanh approximations
(models/vocoder/fastmath.py) are the ones the kernel uses, with the same constants and the same
order of operations; int8 matvecs are models/vocoder/quantize.py's, the conditioning network
models/vocoder/conditioning.py's.

Shapes: H = hidden_size, F = fc_size, C = cond_size, K = 256 classes, T = hop_length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.dsp.pitch import mel_pitch, source
from models.vocoder.chain import SynthesisChain
from models.vocoder.conditioning import condition, project_conditioning
from models.vocoder.config import VocoderConfig
from models.vocoder.excitation import (
    STEP_INPUTS,
    excitation_targets,
    frame_lpc,
    frame_source,
    predict,
)
from models.vocoder.fastmath import f32, fast_exp, fast_sigmoid, fast_tanh, fma32
from models.vocoder.mulaw import Deemphasis, mulaw_table, preemphasize
from models.vocoder.quantize import (
    QuantizedWeights,
    qmatvec,
    quantize_relu_output,
    quantize_unit,
)

# --- the autoregressive frame ---------------------------------------------------------------------


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


# --- teacher forcing (training checks; appended for models/train/wavernn.py's tests) --------------


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
