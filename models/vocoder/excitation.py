"""Linear prediction and the sine source around the net: per-frame predictor coefficients and
source from the mel, the prediction of a sample, and the step inputs training feeds."""

from __future__ import annotations

import numpy as np

from models.dsp.lpc import lpc_from_mel, synthesize
from models.dsp.pitch import mel_pitch, source
from models.vocoder.config import VocoderConfig
from models.vocoder.fastmath import f32
from models.vocoder.mulaw import MU, mulaw_encode, mulaw_table


def frame_lpc(mel: np.ndarray, config: VocoderConfig) -> np.ndarray:
    """Per-frame predictor coefficients a_1..a_P of the pre-emphasised signal, float32 [N, P]
    ([N, 0] when config.lpc_order is 0): what the kernel and training use (models/dsp/lpc.py)."""
    if not config.lpc_order:
        return np.zeros((mel.shape[0], 0), f32)
    a, _ = lpc_from_mel(
        mel, config.lpc_order, config.preemphasis, noise_floor=config.lpc_noise_floor
    )
    return np.ascontiguousarray(a[:, 1:], dtype=f32)


def frame_source(mel: np.ndarray, config: VocoderConfig) -> np.ndarray:
    """The sine source of a whole utterance from its start, float32 [N * hop, 2]
    (models/dsp/pitch.py):
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
    signal: np.ndarray,
    lpc: np.ndarray,
    hop: int,
    noise: np.ndarray | None = None,
    ring: float = 0.0,
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
"""The per-step inputs made from the mel alone: the sine source at the mel's F0
(models/dsp/pitch.py),
so the net need not count samples to time its pitch pulses."""
STEP_INPUTS = SIGNAL_INPUTS + SOURCE_INPUTS
"""All scalar inputs of a GRU step and their weight columns, in input-column order."""
