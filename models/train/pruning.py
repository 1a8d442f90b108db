"""Schedules (learning rate, block density) and gradual block pruning of the sparse matrices."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from models.train.wavernn import WaveRNN
from models.vocoder.config import VocoderConfig
from models.vocoder.params import SPARSE_WEIGHTS
from models.vocoder.sparsity import block_norms, grow_block_mask, magnitude_block_mask

logger = logging.getLogger(__name__)


class GrowthError(ValueError):
    """--grow-density or --prune-density that cannot change the run it resumes (none, one still
    pruning, or a new density on the wrong side of its own)."""


def cubic_density(
    progress: float, target: float, start: float, end: float, initial: float = 1.0
) -> float:
    """Density `initial` until `start`, then target + (initial - target) * (1 - x)^3 with x going
    0 -> 1 at `end` (initial: 1.0 for a dense start, a resumed run's density for
    --prune-density)."""
    if progress <= start:
        return initial
    x = min(1.0, (progress - start) / max(end - start, 1e-9))
    return target + (initial - target) * (1.0 - x) ** 3


def learning_rate(progress: float, step: int, peak: float, warmup: int, final: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay from `peak` to `final` over
    progress."""
    warm = min(1.0, (step + 1) / max(warmup, 1))
    cos = final + 0.5 * (peak - final) * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return warm * cos


class Pruner:
    """Block-magnitude masks for the sparse matrices; applied after every optimizer step."""

    def __init__(self, model: WaveRNN, config: VocoderConfig) -> None:
        self.params = model.sparse_parameters()
        self.block = (config.block_rows, config.block_cols)
        self.masks = {k: torch.ones_like(p) for k, p in self.params.items()}
        self.density = 1.0

    def update(self, density: float) -> None:
        """Recompute masks from the current magnitudes at `density` (kept blocks only shrink in
        number)."""
        self.density = density
        if density >= 1.0:
            return
        for k, p in self.params.items():
            w = p.detach().float().numpy()
            self.masks[k] = torch.from_numpy(magnitude_block_mask(w, self.block, density))
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for k, p in self.params.items():
            p.mul_(self.masks[k])

    def grow(self, density: float, scores: dict[str, np.ndarray]) -> None:
        """Add the blocks with the largest `scores` (grow_block_mask) until `density`. The new
        blocks start at zero, so the model computes exactly what it did before."""
        for k in self.params:
            mask = self.masks[k].numpy()
            self.masks[k] = torch.from_numpy(grow_block_mask(mask, scores[k], self.block, density))
        self.density = density
        self.apply()

    def state_dict(self) -> dict[str, Any]:
        return {"density": self.density, "masks": {k: m.bool() for k, m in self.masks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.density = float(state["density"])
        self.masks = {k: m.float() for k, m in state["masks"].items()}


def finalize_sparsity(
    weights: dict[str, np.ndarray], config: VocoderConfig
) -> dict[str, np.ndarray]:
    """Prune the sparse matrices to exactly the target density (a no-op once training reached
    it)."""
    out = dict(weights)
    for name in SPARSE_WEIGHTS:
        mask = magnitude_block_mask(
            weights[name], (config.block_rows, config.block_cols), config.density
        )
        out[name] = (weights[name] * mask).astype(np.float32)
    return out


def block_density(w: np.ndarray, config: VocoderConfig) -> float:
    norms = block_norms(w, (config.block_rows, config.block_cols))
    return float(np.count_nonzero(norms) / norms.size)
