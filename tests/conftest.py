"""Shared fixtures: a tiny real compiled vocoder (no mocks of our own code).

The tiny model (models.vocoder.config.TINY, random weights) goes through the same compile step and
the
same runtime as the shipped one; it compiles in about a second and runs ~100x faster, which keeps
the suites quick while exercising every code path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """compiled/<name>/ of a tiny real model built for this host's best ISA."""
    from models.compile import build_artifact
    from models.vocoder.config import TINY
    from models.vocoder.params import random_weights

    out = tmp_path_factory.mktemp("compiled") / "tiny"
    return build_artifact(random_weights(TINY, seed=0), TINY, out, description="tiny test model")


@pytest.fixture(scope="session")
def tiny_index_dir(tiny_model_dir: Path) -> Path:
    """A compiled/ directory whose manifest.json index names the tiny model as the default."""
    from models.artifact import update_index

    update_index(tiny_model_dir.parent, tiny_model_dir.name, make_default=True)
    return tiny_model_dir.parent


def make_mel(frames: int, seed: int = 0) -> np.ndarray:
    """A plausible log-mel float32 [frames, 80]: smooth in time, inside the contract's range."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(-8.0, -2.0, size=(1, 80))
    walk = np.cumsum(rng.normal(0.0, 0.15, size=(frames, 80)), axis=0)
    return np.clip(base + walk, -11.0, 2.0).astype(np.float32)


@pytest.fixture(name="make_mel")
def make_mel_fixture():
    return make_mel
