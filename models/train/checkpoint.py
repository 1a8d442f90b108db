"""Checkpoints: save and load, the model a checkpoint holds, and export to reference weights."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.train.pruning import block_density, finalize_sparsity
from models.train.wavernn import SAMPLE_GAIN, WaveRNN, to_reference_weights, widen_input_columns
from models.vocoder.config import VocoderConfig
from models.vocoder.params import SPARSE_WEIGHTS

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic write: a crash mid-save never leaves a truncated checkpoint behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=False)


GRU_INPUT = "gru.weight_ih_l0"  # the parameter whose columns are the GRU's inputs


def model_from_checkpoint(state: dict[str, Any]) -> tuple[WaveRNN, VocoderConfig]:
    config = VocoderConfig.from_dict(state["config"])
    model = WaveRNN(config)
    # The input gain is part of what the stored GRU column means.
    model.sample_gain = float(state.get("sample_gain", SAMPLE_GAIN))
    params = {k: v.float() for k, v in state["model"].items()}
    params[GRU_INPUT] = widen_input_columns(params[GRU_INPUT], config.cond_size)
    model.load_state_dict(params)
    return model, config


def widen_moments(opt: torch.optim.Optimizer, model: WaveRNN, config: VocoderConfig) -> None:
    """Adam moments of a checkpoint from before some step inputs existed: zero moments for the
    new columns, as for a fresh parameter (the other columns keep theirs)."""
    moments = opt.state.get(dict(model.named_parameters())[GRU_INPUT], {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in moments:
            moments[key] = widen_input_columns(moments[key], config.cond_size)


def export(state: dict[str, Any], out_dir: Path, temperature: float = 1.0) -> dict[str, np.ndarray]:
    """Checkpoint -> out_dir/{weights.npz, config.json}, exactly block-sparse at the target density.

    temperature < 1 sharpens the output distribution by scaling FC2 (weights and bias) by
    1 / temperature: logits / T is then baked into the weights, so the kernel's sampler is unchanged
    and the sparsity pattern is untouched. An undertrained model's wide tails let a single unlucky
    draw in silence start a loud excursion that the previous-sample input then sustains.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    model, config = model_from_checkpoint(state)
    weights = finalize_sparsity(to_reference_weights(model), config)
    if temperature != 1.0:
        inv = np.float32(1.0 / temperature)
        weights["fc2.weight"] = (weights["fc2.weight"] * inv).astype(np.float32)
        weights["fc2.bias"] = (weights["fc2.bias"] * inv).astype(np.float32)
        logger.info("baked sampling temperature %.3g into fc2", temperature)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "weights.npz", **weights)
    config.save(out_dir / "config.json")
    for name in SPARSE_WEIGHTS:
        logger.info("exported %s: block density %.4f", name, block_density(weights[name], config))
    logger.info("exported step %s weights to %s", state.get("step"), out_dir)
    return weights


def save_small(state: dict[str, Any], path: Path) -> None:
    """A compact resumable checkpoint: fp16 weights + masks + counters (no optimizer moments)."""
    small = {
        "config": state["config"],
        "sample_gain": state.get("sample_gain", SAMPLE_GAIN),
        "model": {k: v.half() for k, v in state["model"].items()},
        "pruner": state["pruner"],
        "step": state["step"],
        "train_seconds": state["train_seconds"],
        "args": state.get("args", {}),
        "history": state.get("history", [])[-50:],
    }
    save_checkpoint(path, small)
    logger.info("saved compact checkpoint %s (%.1f MB)", path, path.stat().st_size / 1e6)
