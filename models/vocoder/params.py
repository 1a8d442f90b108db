"""The vocoder's weights: names, shapes, which are sparse, checks, and deterministic random ones."""

from __future__ import annotations

import numpy as np

from models.vocoder.config import VocoderConfig
from models.vocoder.excitation import STEP_INPUTS
from models.vocoder.fastmath import f32

WEIGHT_SHAPES = {
    # name: shape as a function of the config
    "cond.conv1.weight": lambda c: (c.cond_hidden, c.n_mels, 3),
    "cond.conv1.bias": lambda c: (c.cond_hidden,),
    "cond.conv2.weight": lambda c: (c.cond_size, c.cond_hidden, 3),
    "cond.conv2.bias": lambda c: (c.cond_size,),
    "gru.w_cond": lambda c: (3 * c.hidden_size, c.cond_size),
    "gru.w_sample": lambda c: (3 * c.hidden_size,),
    "gru.w_pred": lambda c: (3 * c.hidden_size,),
    "gru.w_exc": lambda c: (3 * c.hidden_size,),
    "gru.w_sin": lambda c: (3 * c.hidden_size,),
    "gru.w_cos": lambda c: (3 * c.hidden_size,),
    "gru.b_ih": lambda c: (3 * c.hidden_size,),
    "gru.w_hh": lambda c: (3 * c.hidden_size, c.hidden_size),
    "gru.b_hh": lambda c: (3 * c.hidden_size,),
    "fc1.weight": lambda c: (c.fc_size, c.hidden_size),
    "fc1.bias": lambda c: (c.fc_size,),
    "fc2.weight": lambda c: (c.n_classes, c.fc_size),
    "fc2.bias": lambda c: (c.n_classes,),
}
SPARSE_WEIGHTS = ("gru.w_hh", "fc1.weight", "fc2.weight")
"""Stored dense (zeros outside kept blocks); packed to BSR by models/vocoder/sparsity.py at compile
time."""


def upgrade_weights(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Weights saved before the GRU saw p[n] and e[n-1] (kernel ABI < 7) or the sine source
    (ABI < 8): those columns are zero, which is exactly the older model, so it can be compiled
    again or fine-tuned from."""
    out = dict(weights)
    if "gru.w_sample" in out:
        for name in STEP_INPUTS[1:]:
            out.setdefault(name, np.zeros_like(out["gru.w_sample"], dtype=f32))
    return out


def check_weights(weights: dict[str, np.ndarray], config: VocoderConfig) -> None:
    """Raise ValueError unless every tensor is present, float32-castable, finite and well-shaped."""
    missing = set(WEIGHT_SHAPES) - set(weights)
    if missing:
        raise ValueError(f"weights missing tensors: {sorted(missing)}")
    for name, shape_of in WEIGHT_SHAPES.items():
        want = shape_of(config)
        got = tuple(weights[name].shape)
        if got != want:
            raise ValueError(f"weight {name!r} has shape {got}, config needs {want}")
        if not np.all(np.isfinite(weights[name])):
            raise ValueError(f"weight {name!r} has non-finite values")


def random_weights(config: VocoderConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic untrained weights at the config's size and sparsity (blocks pruned at random).

    Scales are chosen so the GRU neither saturates nor dies and the softmax is not one-hot,
    which keeps the sampler exercised the way a trained model would.
    """
    from models.vocoder.sparsity import random_block_mask  # local: sparsity imports this module

    rng = np.random.default_rng(seed)

    def uniform(shape: tuple[int, ...], fan_in: int, gain: float = 1.0) -> np.ndarray:
        bound = gain / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape).astype(f32)

    c = config
    w: dict[str, np.ndarray] = {
        "cond.conv1.weight": uniform(WEIGHT_SHAPES["cond.conv1.weight"](c), 3 * c.n_mels),
        "cond.conv1.bias": np.zeros(c.cond_hidden, f32),
        "cond.conv2.weight": uniform(WEIGHT_SHAPES["cond.conv2.weight"](c), 3 * c.cond_hidden),
        "cond.conv2.bias": np.zeros(c.cond_size, f32),
        "gru.w_cond": uniform((3 * c.hidden_size, c.cond_size), c.cond_size),
        "gru.w_sample": uniform((3 * c.hidden_size,), 1, gain=0.5),
        "gru.b_ih": np.zeros(3 * c.hidden_size, f32),
        "gru.b_hh": np.zeros(3 * c.hidden_size, f32),
        "fc1.bias": np.zeros(c.fc_size, f32),
        "fc2.bias": np.zeros(c.n_classes, f32),
    }
    # Sparse matrices: kept values are scaled up by 1/sqrt(density) so the effective fan-in matches.
    for name, fan_in in (
        ("gru.w_hh", c.hidden_size),
        ("fc1.weight", c.hidden_size),
        ("fc2.weight", c.fc_size),
    ):
        shape = WEIGHT_SHAPES[name](c)
        mask = random_block_mask(shape, (c.block_rows, c.block_cols), c.density, rng)
        gain = 3.0 if name == "fc2.weight" else 1.5
        w[name] = (uniform(shape, fan_in, gain=gain / np.sqrt(c.density)) * mask).astype(f32)
    # Drawn last, in the order the inputs arrived, so the weights above are those of the models
    # seeded before these inputs existed.
    for name in STEP_INPUTS[1:]:
        w[name] = uniform((3 * c.hidden_size,), 1, gain=0.5)
    return w
