"""Pitch postfilter: a one-tap comb at the mel's pitch on the vocoder's output.

A sampling vocoder leaves noise between the harmonics of voiced speech (its periodicity was 0.73
against the original's 0.82 on the held-out corpus), and the log-spectral distance of voiced
frames pays for it. Speech codecs clean this up after decoding with a long-term (pitch)
postfilter; this is the simplest one:

    y[n] = (x[n] + g v x[n - T]) / (1 + g v)

with T = sample_rate / F0 the pitch period (fractional: linear interpolation between samples) and
v the voicing of x[n]'s frame, both from models/dsp/pitch.py's mel_pitch, the same F0 and voicing as
the sine source the GRU sees. Harmonics of F0 add in phase (gain 1); the noise between them is
attenuated (down to (1 - g v) / (1 + g v) midway); unvoiced frames (v = 0) pass unchanged. It is
causal and FIR (x, not y, is delayed), so it streams frame by frame with a history of the
longest period and cannot ring. Output stays in [-1, 1]: a convex combination of samples in it.

With a cutoff the filter works below it only: the comb's correction c = y - x, i.e.
g v (x[n - T] - x[n]) / (1 + g v), goes through a linear-phase FIR lowpass b (POSTFILTER_TAPS
taps) and is added to x delayed by the FIR's own delay D = (taps - 1) / 2:

    y[n] = x[n - D] + sum_k b[k] c[n - k]

so the band above the cutoff passes untouched (D samples late) and the band below is combed as
before. The HTS voice is noise above ~4 kHz even when voiced; combing it there made its
per-bin spectrum further from the original's (docs/training.md). The output is
clipped to [-1, 1] (the lowpass can overshoot by its ripple).

numpy here is the statement of the math and the fallback; the whole-band comb also runs as one
compiled call per frame (models/kernel/postfilter.py, a PostfilterKernel), the same output bit
for bit. The lowpass path stays numpy (its FIR sums go through BLAS in the library's order).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
from scipy.signal import firwin

from models.dsp.pitch import PITCH_RANGE_HZ

POSTFILTER_TAPS = 15
"""Length of the band-limiting lowpass: short, so the output is only POSTFILTER_DELAY samples
late; measured on the held-out set, 11-21 taps did about as well and 63 worse (its delay)."""
POSTFILTER_DELAY = (POSTFILTER_TAPS - 1) // 2


class PostfilterKernel(Protocol):
    """A compiled stand-in for one frame of the whole-band comb: keeps its own history (of the
    length it was made for) and returns the filtered frame in a buffer of its own, which the
    next call overwrites."""

    def __call__(self, pcm: np.ndarray, f0: float, voicing: float, strength: float) -> np.ndarray:
        """pcm float32 [hop_length] -> float32 [hop_length]."""
        ...


KernelFactory = Callable[[int, int, int], PostfilterKernel]
"""Makes a PostfilterKernel for (sample_rate, hop_length, history length)."""


def runs_compiled(strength: float, cutoff_hz: float) -> bool:
    """Whether a PitchPostfilter with these settings runs a kernel it is given: the whole-band
    comb at a strength above 0 (strength 0 passes the input through)."""
    return bool(strength) and not cutoff_hz


class PitchPostfilter:
    """Streaming state: the last input samples a pitch period can reach back to.

    With `kernel` (a KernelFactory) the whole-band comb runs compiled, frame by frame, and keeps
    the history there; its result is then the kernel's buffer, valid until the next call
    (`reuses_output`). The lowpass path and strength 0 stay numpy."""

    def __init__(
        self,
        strength: float,
        sample_rate: int,
        hop_length: int,
        cutoff_hz: float = 0.0,
        kernel: KernelFactory | None = None,
    ) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"pitch postfilter strength must be in [0, 1], got {strength}")
        if not 0.0 <= cutoff_hz < sample_rate / 2:
            raise ValueError(f"pitch postfilter cutoff must be in [0, {sample_rate / 2:g}) Hz")
        self.strength = strength
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.cutoff_hz = cutoff_hz
        # the longest period (the lowest F0 mel_pitch can return) plus one for the interpolation
        self._history = np.zeros(math.ceil(sample_rate / PITCH_RANGE_HZ[0]) + 1)
        self._lowpass = (
            firwin(POSTFILTER_TAPS, cutoff_hz, fs=sample_rate) if cutoff_hz and strength else None
        )
        self._correction = np.zeros(POSTFILTER_TAPS - 1)  # the lowpass's past inputs
        self._kernel = (
            kernel(sample_rate, hop_length, self._history.size)
            if kernel is not None and runs_compiled(strength, cutoff_hz)
            else None
        )

    @property
    def reuses_output(self) -> bool:
        """Whether a result is a buffer the next call overwrites (the compiled comb's)."""
        return self._kernel is not None

    @property
    def delay(self) -> int:
        """Samples the output lags the input by: the lowpass's, or 0 for the whole-band comb."""
        return POSTFILTER_DELAY if self._lowpass is not None else 0

    def __call__(self, pcm: np.ndarray, f0: np.ndarray, voicing: np.ndarray) -> np.ndarray:
        """Filter k consecutive frames: pcm float32 [k * hop_length], f0 and voicing [k] ->
        float32 (for one frame through the kernel: its buffer, see reuses_output)."""
        hop = self.hop_length
        assert pcm.shape == (f0.shape[0] * hop,) and voicing.shape == f0.shape
        if self._kernel is not None:
            if f0.shape[0] == 1:  # the stream's case: one frame, no copy
                return self._kernel(pcm, float(f0[0]), float(voicing[0]), self.strength)
            return self._compiled(pcm, f0, voicing)
        past = self._history.size
        x = np.concatenate([self._history, pcm.astype(np.float64)])
        self._history = x[-past:]
        if self.strength == 0.0:
            return pcm.astype(np.float32)
        ramp = _ramp(x.size)  # sample indices of x (cached: the same every frame)
        period = np.repeat(self.sample_rate / np.asarray(f0, np.float64), hop)
        gain = np.repeat(self.strength * np.asarray(voicing, np.float64), hop)
        delayed = np.interp(ramp[past:] - period, ramp, x)
        if self._lowpass is None:
            return ((x[past:] + gain * delayed) / (1.0 + gain)).astype(np.float32)
        c = np.concatenate([self._correction, gain / (1.0 + gain) * (delayed - x[past:])])
        self._correction = c[c.size - self._correction.size :]
        low = np.convolve(c, self._lowpass, mode="valid")
        late = x[past - POSTFILTER_DELAY : x.size - POSTFILTER_DELAY]
        return np.clip(late + low, -1.0, 1.0).astype(np.float32)

    def _compiled(self, pcm: np.ndarray, f0: np.ndarray, voicing: np.ndarray) -> np.ndarray:
        """Several frames through the kernel, each copied out of its buffer."""
        assert self._kernel is not None
        hop, g = self.hop_length, self.strength
        frames = [
            self._kernel(pcm[k * hop : (k + 1) * hop], float(f0[k]), float(voicing[k]), g).copy()
            for k in range(f0.shape[0])
        ]
        return np.concatenate(frames)


@functools.lru_cache(maxsize=8)
def _ramp(n: int) -> np.ndarray:
    """0.0, 1.0, ..., n - 1 (float64, read-only)."""
    ramp = np.arange(n, dtype=np.float64)
    ramp.setflags(write=False)
    return ramp
