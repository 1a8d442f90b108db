"""The shipped speech sample's log-mel, and tiling it to a frame count."""

from __future__ import annotations

import numpy as np
import pytest

from models.dsp.features import validate_mel
from models.sample_mel import SampleMelError, load_sample_mel, tile_mel


def test_shipped_sample_mel_follows_the_mel_contract() -> None:
    mel = load_sample_mel()
    validate_mel(mel)  # raises MelInputError if not [n, 80] finite
    assert mel.shape[0] >= 80, "at least one second of speech"
    # Festival speech, not silence: log-mel spans the floor (-11.5) up to loud bins.
    assert mel.max() > -2.0 and mel.min() >= np.log(1e-5) - 1e-3


def test_tile_mel_repeats_and_crops() -> None:
    mel = np.arange(3 * 80, dtype=np.float32).reshape(3, 80)
    out = tile_mel(mel, 7)
    assert out.shape == (7, 80)
    np.testing.assert_array_equal(out[3:6], mel)
    np.testing.assert_array_equal(out[6], mel[0])
    with pytest.raises(SampleMelError):
        tile_mel(mel, 0)
