"""The conditioning network (two k=3 convolutions over the normalised mel, once per frame) and
its projection into the GRU's gates."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.vocoder.config import VocoderConfig
from models.vocoder.fastmath import f32, fast_tanh, fma32


def conv1d_k3(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """'valid' k=3 convolution over time. x [N, Cin] -> [N-2, Cout]; weight [Cout, Cin, 3]."""
    n = x.shape[0] - 2
    out = (
        x[0:n] @ weight[:, :, 0].T
        + x[1 : n + 1] @ weight[:, :, 1].T
        + x[2 : n + 2] @ weight[:, :, 2].T
    )
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
    "condition" function does (models/kernel/frame.py). Dot products accumulate in float64 and round
    to
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


def project_conditioning(cond_pair: np.ndarray, w_cond: np.ndarray) -> np.ndarray:
    """cond_pair [2, C] times w_cond [3H, C] transposed, one fused multiply-add per input column
    in column order, as the kernel accumulates it: a BLAS matmul sums in an order of its own,
    which differs in the last bit from one CPU to the next."""
    cond_pair = cond_pair.astype(f32)
    acc = np.zeros((cond_pair.shape[0], w_cond.shape[0]), f32)
    for c in range(cond_pair.shape[1]):
        acc = fma32(cond_pair[:, c : c + 1], w_cond[:, c], acc)
    return acc
