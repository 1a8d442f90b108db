"""Block sparsity: pruning masks and BSR packing.

A matrix W [M, K] with block shape (R, C) is cut into (M/R) x (K/C) blocks; pruning keeps the
blocks of largest L2 norm. BSR keeps, for each block row, the column-block indices of kept blocks
(`indices`, sliced by `indptr`) and their values (`data` [nnzb, R, C]). Row blocks (C=1) let the
kernel broadcast one input element and FMA a whole register of rows at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BSR:
    data: np.ndarray  # [nnzb, R, C]
    indices: np.ndarray  # [nnzb] int32, column-block index
    indptr: np.ndarray  # [M/R + 1] int32
    shape: tuple[int, int]

    @property
    def block(self) -> tuple[int, int]:
        return int(self.data.shape[1]), int(self.data.shape[2])

    @property
    def density(self) -> float:
        r, c = self.block
        return self.data.shape[0] * r * c / (self.shape[0] * self.shape[1])


def _check_block(shape: tuple[int, ...], block: tuple[int, int]) -> tuple[int, int]:
    m, k = shape
    r, c = block
    if m % r or k % c:
        raise ValueError(f"block {block} does not tile a {m}x{k} matrix")
    return m // r, k // c


def block_norms(w: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """L2 norm of every block: [M/R, K/C]."""
    mb, kb = _check_block(w.shape, block)
    r, c = block
    return np.sqrt((w.reshape(mb, r, kb, c).astype(np.float64) ** 2).sum(axis=(1, 3)))


def blocks_to_mask(keep: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    r, c = block
    return np.repeat(np.repeat(keep, r, axis=0), c, axis=1).astype(np.float32)


def _keep_count(n_blocks: int, density: float) -> int:
    return max(1, round(n_blocks * density))


def magnitude_block_mask(w: np.ndarray, block: tuple[int, int], density: float) -> np.ndarray:
    """0/1 float mask keeping the `density` share of blocks with the largest L2 norm.

    Ties are broken by position so the mask is deterministic.
    """
    norms = block_norms(w, block)
    k = _keep_count(norms.size, density)
    order = np.argsort(-norms.ravel(), kind="stable")
    keep = np.zeros(norms.size, bool)
    keep[order[:k]] = True
    return blocks_to_mask(keep.reshape(norms.shape), block)


def grow_block_mask(
    mask: np.ndarray, scores: np.ndarray, block: tuple[int, int], density: float
) -> np.ndarray:
    """0/1 float mask: the blocks of `mask` plus the unkept blocks with the largest L2 norm of
    `scores` (same shape), until `density` of the blocks are kept.

    RigL's growth step with the loss gradient as the score: the blocks the loss most wants
    to use. Kept blocks stay kept; ties are broken by position so the mask is deterministic.
    """
    kept = block_norms(mask, block) > 0
    k = _keep_count(kept.size, density)
    if k < kept.sum():
        raise ValueError(
            f"density {density} keeps fewer blocks than the mask has: growing never prunes"
        )
    norms = np.where(kept, -np.inf, block_norms(scores, block)).ravel()
    order = np.argsort(-norms, kind="stable")
    grown = kept.ravel().copy()
    grown[order[: k - kept.sum()]] = True
    return blocks_to_mask(grown.reshape(kept.shape), block)


def random_block_mask(
    shape: tuple[int, ...], block: tuple[int, int], density: float, rng: np.random.Generator
) -> np.ndarray:
    mb, kb = _check_block(shape, block)
    keep = np.zeros(mb * kb, bool)
    keep[rng.choice(mb * kb, size=_keep_count(mb * kb, density), replace=False)] = True
    return blocks_to_mask(keep.reshape(mb, kb), block)


def to_bsr(w: np.ndarray, block: tuple[int, int]) -> BSR:
    """Pack the nonzero blocks of a dense matrix. A block is kept if any of its values is
    nonzero."""
    mb, kb = _check_block(w.shape, block)
    r, c = block
    blocks = w.reshape(mb, r, kb, c).transpose(0, 2, 1, 3)  # [mb, kb, r, c]
    nonzero = np.any(blocks != 0, axis=(2, 3))
    rows, cols = np.nonzero(nonzero)
    indptr = np.zeros(mb + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=mb), out=indptr[1:])
    return BSR(
        data=np.ascontiguousarray(blocks[rows, cols]).astype(w.dtype),
        indices=cols.astype(np.int32),
        indptr=indptr,
        shape=(int(w.shape[0]), int(w.shape[1])),
    )


def from_bsr(bsr: BSR) -> np.ndarray:
    m, k = bsr.shape
    r, c = bsr.block
    out = np.zeros((m // r, k // c, r, c), bsr.data.dtype)
    rows = np.repeat(np.arange(m // r), np.diff(bsr.indptr))
    out[rows, bsr.indices] = bsr.data
    return out.transpose(0, 2, 1, 3).reshape(m, k)


def bsr_matvec(bsr: BSR, x: np.ndarray) -> np.ndarray:
    """Reference y = W x straight from BSR (tests the packing, not the kernel)."""
    m, _ = bsr.shape
    r, c = bsr.block
    y = np.zeros(m, np.float64)
    for br in range(m // r):
        for j in range(bsr.indptr[br], bsr.indptr[br + 1]):
            col = bsr.indices[j] * c
            y[br * r : (br + 1) * r] += bsr.data[j].astype(np.float64) @ x[col : col + c]
    return y
