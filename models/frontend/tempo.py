"""Speaking rate: how a requested speed splits into Festival's HTS rate and a mel time-scale.

The HTS engine's `-r` option changes timing without changing pitch and is exact from 0.25 to
about 3 (one 13-word sentence: 17.41 s at 0.25, 4.32 s at 1, 1.45 s at 3), but it stops at one
5 ms frame per HMM state: 1.20 s at 4 and also 1.20 s at 6. So speeds up to HTS_MAX_RATE are
spoken by Festival alone, and the rest of a faster speed is made by time-scaling the sentence's
log-mel frames (linear interpolation along time, which keeps each frame's spectrum and so the
pitch), so duration falls monotonically across the whole range.

numpy only.
"""

from __future__ import annotations

import numpy as np

HTS_MIN_RATE = 0.25
HTS_MAX_RATE = 3.0
"""The range over which the HTS engine's `-r` scales duration as asked (measured)."""


def split_speed(speed: float) -> tuple[float, float]:
    """speed -> (HTS rate, mel time-scale factor); their product is `speed`."""
    rate = min(max(speed, HTS_MIN_RATE), HTS_MAX_RATE)
    return rate, speed / rate


def time_scale(mel: np.ndarray, factor: float) -> np.ndarray:
    """Play `mel` [frames, bins] `factor` times faster: round(frames / factor) frames (at least
    one), each linearly interpolated between its neighbours in the input."""
    if factor <= 0.0:
        raise ValueError(f"time-scale factor must be positive, got {factor}")
    n_in = mel.shape[0]
    n_out = max(1, round(n_in / factor))
    if n_out == n_in:
        return mel
    pos = np.linspace(0.0, n_in - 1, n_out)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w = (pos - lo)[:, None].astype(mel.dtype)
    return (mel[lo] * (1 - w) + mel[hi] * w).astype(mel.dtype)
