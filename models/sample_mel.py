"""The shipped speech sample's log-mel: the input the web demo, `sparrow bench` and
`sparrow loadtest` send (Festival speech, so a voice's own sampling never reaches full scale).

The file lives with the web demo's static files, which serve it to browsers; it is data, so the
model package reads it by path and imports nothing from the server.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from models.dsp.features import SPEC

SAMPLE_MEL_PATH = Path(__file__).resolve().parent.parent / "server" / "static" / "sample-mel.json"


class SampleMelError(ValueError):
    """The sample mel is missing or malformed, or a frame count is not positive."""


def load_sample_mel(path: Path = SAMPLE_MEL_PATH) -> np.ndarray:
    """The sample log-mel (models/dsp/features.py contract): float32 [n, n_mels]."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SampleMelError(
            f"sample mel {path} is missing (sparrow loadtest --write-sample-mel)"
        ) from exc
    mel = np.asarray(data["mel"], dtype=np.float32)
    if mel.ndim != 2 or mel.shape[1] != SPEC.n_mels or mel.shape[0] == 0:
        raise SampleMelError(
            f"sample mel {path} has shape {mel.shape}, expected [n, {SPEC.n_mels}]"
        )
    return mel


def tile_mel(mel: np.ndarray, frames: int) -> np.ndarray:
    """Repeat/crop `mel` [n, n_mels] to exactly `frames` frames (the speech, then again...)."""
    if frames <= 0:
        raise SampleMelError(f"--mel-frames must be positive, got {frames}")
    reps = math.ceil(frames / mel.shape[0])
    return np.ascontiguousarray(np.tile(mel, (reps, 1))[:frames])
