"""The reference's fast math and mu-law against exact numpy."""

import numpy as np
import pytest

from models import reference as ref
from models.config import TINY


def test_fast_tanh_matches_numpy() -> None:
    x = np.linspace(-12, 12, 200_001, dtype=np.float32)
    assert np.max(np.abs(ref.fast_tanh(x) - np.tanh(x.astype(np.float64)))) < 1e-6


def test_fast_sigmoid_matches_numpy() -> None:
    x = np.linspace(-30, 30, 200_001, dtype=np.float32)
    exact = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    assert np.max(np.abs(ref.fast_sigmoid(x) - exact)) < 1e-6


def test_fast_exp_relative_error() -> None:
    # Relative error grows with |x| only through float32 rounding of x * log2(e).
    for lo, tol in ((-20, 2e-6), (-80, 5e-6)):
        x = np.linspace(lo, 0, 400_001, dtype=np.float32)
        exact = np.exp(x.astype(np.float64))
        assert np.max(np.abs(ref.fast_exp(x) / exact - 1)) < tol
    assert ref.fast_exp(np.array([-1000.0], np.float32))[0] < 1e-37  # clamped, not garbage


def test_mulaw_round_trip() -> None:
    k = np.arange(256)
    assert np.array_equal(ref.mulaw_encode(ref.mulaw_decode(k)), k)
    x = np.linspace(-1, 1, 10_001)
    err = np.abs(ref.mulaw_decode(ref.mulaw_encode(x)) - x)
    assert err.max() < 0.032  # coarsest step at full scale
    assert err[np.abs(x) < 0.01].max() < 1e-3  # fine steps near zero


def test_quantize_rows_reconstructs() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(32, 64)).astype(np.float32)
    w[3] = 0
    wq, scale = ref.quantize_rows(w)
    assert wq.dtype == np.int8 and np.abs(wq).max() <= 127
    assert np.allclose(wq * scale[:, None], w, atol=scale.max() / 2 + 1e-7)
    assert np.all(wq[3] == 0)


def test_check_weights_rejects_bad_shapes_and_nan() -> None:
    w = ref.random_weights(TINY, 0)
    ref.check_weights(w, TINY)
    bad = dict(w, **{"fc1.bias": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="fc1.bias"):
        ref.check_weights(bad, TINY)
    nan = dict(w)
    nan["gru.w_hh"] = w["gru.w_hh"].copy()
    nan["gru.w_hh"][0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        ref.check_weights(nan, TINY)


def test_vocode_is_deterministic_and_seed_dependent() -> None:
    w = ref.random_weights(TINY, 0)
    mel = np.random.default_rng(0).normal(-5, 2, (4, 80)).astype(np.float32)
    a = ref.vocode(w, TINY, mel, seed=1)
    assert a.shape == (4 * TINY.hop_length,)
    assert np.array_equal(a, ref.vocode(w, TINY, mel, seed=1))
    assert not np.array_equal(a, ref.vocode(w, TINY, mel, seed=2))
    assert np.all(np.abs(a) <= 1)
