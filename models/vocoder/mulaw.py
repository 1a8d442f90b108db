"""8-bit mu-law classes and the pre-emphasis / de-emphasis pair around the net's signal."""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from models.vocoder.fastmath import f32

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


# --- pre-emphasis ---------------------------------------------------------------------------------


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
