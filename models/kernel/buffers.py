"""Buffers the compiled functions read and write in place, without a copy."""

from __future__ import annotations

import numpy as np


def aligned(shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Zeroed array whose data starts on a 64-byte boundary (TVM's DLPack import needs it)."""
    n, size = int(np.prod(shape)), np.dtype(dtype).itemsize
    raw = np.zeros(n + 64 // size, dtype)
    start = (-raw.ctypes.data % 64) // size
    return raw[start : start + n].reshape(shape)
