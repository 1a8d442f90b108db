"""The reference's fast math and mu-law against exact numpy."""

import dataclasses

import numpy as np
import pytest

from models.vocoder import excitation, fastmath, mulaw, params, quantize
from models.vocoder import reference as ref
from models.vocoder.config import TINY


def test_fast_tanh_matches_numpy() -> None:
    x = np.linspace(-12, 12, 200_001, dtype=np.float32)
    got = fastmath.fast_tanh(x)
    assert np.max(np.abs(got - np.tanh(x.astype(np.float64)))) < 1.2e-5
    assert np.max(np.abs(got)) < 1.0  # a gate never passes 1, so h cannot grow


def test_fast_sigmoid_matches_numpy() -> None:
    x = np.linspace(-30, 30, 200_001, dtype=np.float32)
    exact = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    got = fastmath.fast_sigmoid(x)
    assert np.max(np.abs(got - exact)) < 6e-6
    assert got.min() >= 0.0 and got.max() <= 1.0


def test_fast_exp_relative_error() -> None:
    # Relative error grows with |x| only through float32 rounding of x * log2(e).
    for lo, tol in ((-20, 2e-6), (-80, 5e-6)):
        x = np.linspace(lo, 0, 400_001, dtype=np.float32)
        exact = np.exp(x.astype(np.float64))
        assert np.max(np.abs(fastmath.fast_exp(x) / exact - 1)) < tol
    assert fastmath.fast_exp(np.array([-1000.0], np.float32))[0] < 1e-37  # clamped, not garbage


def test_mulaw_round_trip() -> None:
    k = np.arange(256)
    assert np.array_equal(mulaw.mulaw_encode(mulaw.mulaw_decode(k)), k)
    x = np.linspace(-1, 1, 10_001)
    err = np.abs(mulaw.mulaw_decode(mulaw.mulaw_encode(x)) - x)
    assert err.max() < 0.032  # coarsest step at full scale
    assert err[np.abs(x) < 0.01].max() < 1e-3  # fine steps near zero


def test_quantize_rows_reconstructs() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(32, 64)).astype(np.float32)
    w[3] = 0
    wq, scale = quantize.quantize_rows(w)
    assert wq.dtype == np.int8 and np.abs(wq).max() <= 127
    assert np.allclose(wq * scale[:, None], w, atol=scale.max() / 2 + 1e-7)
    assert np.all(wq[3] == 0)


def test_quantized_pairs_never_saturate_maddubs() -> None:
    """u8 x s8 pair sums (vpmaddubsw, int16) stay below 32767 for any uint8 input."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(64, 128)).astype(np.float32)
    w[:, 6:8] = 5.0  # a row's two largest weights side by side: the worst case for the pair bound
    w[7, 10:12] = [-3.0, 3.0]
    wq, _ = quantize.quantize_rows(w)
    pair = np.abs(wq.astype(np.int32)).reshape(64, 64, 2).sum(axis=2)
    assert pair.max() <= 128 and 255 * pair.max() <= 32767
    assert pair.max() >= 120  # the bound is used, not wasted


def test_check_weights_rejects_bad_shapes_and_nan() -> None:
    w = params.random_weights(TINY, 0)
    params.check_weights(w, TINY)
    bad = dict(w, **{"fc1.bias": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="fc1.bias"):
        params.check_weights(bad, TINY)
    nan = dict(w)
    nan["gru.w_hh"] = w["gru.w_hh"].copy()
    nan["gru.w_hh"][0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        params.check_weights(nan, TINY)


def test_vocode_is_deterministic_and_seed_dependent() -> None:
    w = params.random_weights(TINY, 0)
    mel = np.random.default_rng(0).normal(-5, 2, (4, 80)).astype(np.float32)
    a = ref.vocode(w, TINY, mel, seed=1)
    assert a.shape == (4 * TINY.hop_length,)
    assert np.array_equal(a, ref.vocode(w, TINY, mel, seed=1))
    assert not np.array_equal(a, ref.vocode(w, TINY, mel, seed=2))
    assert np.all(np.abs(a) <= 1)


def test_deemphasis_inverts_preemphasis_across_frames() -> None:
    """The runtime de-emphasises frame by frame; carried state makes it the exact inverse."""
    x = (0.5 * np.sin(np.arange(1500) * 0.05)).astype(np.float32)
    e = mulaw.preemphasize(x, 0.85)
    assert np.abs(e).max() < 0.2 * np.abs(x).max() + 0.05  # low frequencies are attenuated
    d = mulaw.Deemphasis(0.85)
    y = np.concatenate([d(e[i : i + 300]) for i in range(0, 1500, 300)])
    np.testing.assert_allclose(y, x, atol=1e-5)
    assert np.array_equal(mulaw.preemphasize(x, 0.0), x) and np.array_equal(
        mulaw.Deemphasis(0.0)(x), x
    )


def test_excitation_targets_plain_and_lpc() -> None:
    from scipy.signal import lfilter

    from models.dsp.features import log_mel

    hop = 300
    rng = np.random.default_rng(0)
    # an all-pole (speech-like) signal: white noise through two resonances
    a = np.convolve([1, -2 * 0.97 * np.cos(0.13), 0.97**2], [1, -2 * 0.95 * np.cos(0.4), 0.95**2])
    x = lfilter([1.0], a, rng.normal(size=12_000))
    x = (0.1 * x / np.abs(x).max()).astype(np.float32)
    # plain: the classes of the signal; inputs at n: decoded class n - 1 (as sample and as
    # excitation), no prediction
    classes, inputs = excitation.excitation_targets(x, np.zeros((41, 0), np.float32), hop)
    assert inputs.shape == (x.size, 3) and inputs.dtype == np.float32
    assert np.array_equal(classes, mulaw.mulaw_encode(x))
    assert not inputs[0].any() and not inputs[:, 1].any()
    assert np.array_equal(inputs[1:, 0], mulaw.mulaw_decode(classes[:-1]))
    assert np.array_equal(inputs[1:, 2], inputs[1:, 0])
    # LPC fitted to the signal's own mel: the excitation is much smaller than the signal
    config = dataclasses.replace(TINY, lpc_order=16, preemphasis=0.0)
    lpc = excitation.frame_lpc(log_mel(x), config)
    assert lpc.shape == (41, 16) and lpc.dtype == np.float32
    e_classes, e_inputs = excitation.excitation_targets(x, lpc, hop)
    e = mulaw.mulaw_decode(e_classes)
    assert np.sqrt(np.mean(e[600:] ** 2)) < 0.3 * np.sqrt(np.mean(x[600:] ** 2))  # > 10 dB gain
    # inputs are the signal as generation would make it: close to the truth, exact at n = 0
    prev, pred, exc = e_inputs.T
    assert prev[0] == 0 and np.abs(prev[1:] - x[:-1]).max() < 0.01
    # each step's prediction is the kernel's from the true past (whose targets these are), and
    # the excitation input is the previous decoded class: the sample is the previous step's
    # prediction plus it
    padded = np.concatenate([np.zeros(16, np.float32), x])  # padded[n + 15] = x[n - 1]
    again = [excitation.predict(lpc[n // hop], padded[n : n + 16][::-1]) for n in range(x.size)]
    assert np.abs(pred - np.array(again)).max() < 1e-6
    assert exc[0] == 0 and np.array_equal(exc[1:], e[:-1])
    assert np.abs(prev[1:] - (pred[:-1] + exc[1:])).max() < 1e-6


@pytest.mark.parametrize("ring", [0.0, 0.9], ids=["white", "ringing"])
def test_noise_injection_targets_correct_the_bent_past(ring: float) -> None:
    """With slips injected into the past (white, or ringing through the LPC filter), each target
    is still e = s - p, p from that noisy past."""
    from scipy.signal import lfilter

    hop, P = 300, 2
    rng = np.random.default_rng(1)
    a = np.array([1.0, -2 * 0.97 * np.cos(0.13), 0.97**2])
    x = lfilter([1.0], a, rng.normal(size=6_000))
    x = (0.2 * x / np.abs(x).max()).astype(np.float32)
    lpc = np.tile(a[1:].astype(np.float32), (21, 1))
    clean_prev = excitation.excitation_targets(x, lpc, hop)[1][:, 0]
    bends = []
    for scale in (1.0, 4.0):
        noise = np.rint(rng.laplace(0.0, scale, x.size)).astype(np.int64)
        classes, inputs = excitation.excitation_targets(x, lpc, hop, noise, ring)
        prev = inputs[:, 0]
        # the kernel's own prediction from the inputs' history gives back each target's class
        # (a class boundary may fall between float32 inputs and the float64 history: rare)
        hist = np.concatenate([np.zeros(P, np.float32), prev])  # prev[n] = made[n - 1]
        pred = np.array(
            [excitation.predict(lpc[n // hop], hist[n + P : n : -1]) for n in range(1, x.size)]
        )
        again = mulaw.mulaw_encode(x[1:].astype(np.float64) - pred)
        assert np.mean(again == classes[1:]) > 0.99
        # the prediction input is that same prediction; the excitation input is what a sampler
        # drew, seen from its own prediction
        assert np.abs(inputs[1:, 1] - pred).max() < 1e-6
        assert np.abs(inputs[1:, 0] - (inputs[:-1, 1] + inputs[1:, 2])).max() < 1e-6
        bends.append(np.abs(prev - clean_prev).mean())
    assert 0 < bends[0] < bends[1]  # more noise, a more bent past


def test_ringing_slips_follow_the_lpc_resonance() -> None:
    """ring_through_lpc: gamma 0 leaves the errors white; a higher gamma rings them at the frame's
    resonance (1/A(z / gamma), frame after frame with the filter's memory carried across)."""
    from scipy.signal import lfilter

    hop, n = 300, 6_000
    a = np.array([1.0, -2 * 0.99 * np.cos(0.13), 0.99**2])  # a sharp resonance at 0.13 rad/sample
    lpc = np.tile(a[1:].astype(np.float32), (n // hop, 1))
    d = np.random.default_rng(2).laplace(size=n)
    assert np.array_equal(excitation.ring_through_lpc(d, lpc, hop, 0.0), d)
    for gamma in (0.5, 0.95):
        expanded = np.concatenate([[1.0], lpc[0].astype(np.float64)]) * gamma ** np.arange(3)
        # one filter over the whole signal: the frame-by-frame memory hand-over is seamless
        assert np.allclose(
            excitation.ring_through_lpc(d, lpc, hop, gamma), lfilter([1.0], expanded, d)
        )

    def resonance_share(y: np.ndarray) -> float:
        power = np.abs(np.fft.rfft(y)) ** 2
        k = round(0.13 / (2 * np.pi) * n)
        return float(power[k - 30 : k + 31].sum() / power.sum())

    shares = [
        resonance_share(excitation.ring_through_lpc(d, lpc, hop, g)) for g in (0.0, 0.5, 0.95)
    ]
    assert shares[0] < 0.05 and shares[0] < shares[1] < shares[2] and shares[2] > 0.3


def test_frame_logit_scales_follow_voicing() -> None:
    config = dataclasses.replace(TINY, voiced_logit_scale=1.2, unvoiced_logit_scale=0.75)
    scales = ref.frame_logit_scales(config, np.array([0.0, 0.5, 1.0, 1.7, -0.2]))
    assert scales.dtype == np.float32
    np.testing.assert_allclose(scales, [0.75, 0.975, 1.2, 1.2, 0.75], rtol=1e-6)
    assert not TINY.voicing_temperature and config.voicing_temperature
    assert np.all(ref.frame_logit_scales(TINY, np.linspace(0, 1, 5)) == 1)
    with pytest.raises(AssertionError):
        dataclasses.replace(TINY, voiced_logit_scale=0.0)


def test_logit_scale_is_a_temperature() -> None:
    """Scaling a frame's logits by s samples it exactly as weights exported at temperature 1 / s
    would (FC2 and its bias times s), and a larger s draws from fewer classes."""
    config = TINY
    w = params.random_weights(config, 1)
    cond = np.random.default_rng(2).normal(0, 1, (2, config.cond_size)).astype(np.float32)
    u = np.random.default_rng(3).random(config.hop_length, dtype=np.float32)
    baked = dict(w)
    s = np.float32(2.5)
    baked["fc2.weight"] = (w["fc2.weight"] * s).astype(np.float32)
    baked["fc2.bias"] = (w["fc2.bias"] * s).astype(np.float32)
    state = ref.FrameState.zeros(config)
    scaled, _ = ref.run_frame(w, config, cond, u, state.copy(), logit_scale=float(s))
    exported, _ = ref.run_frame(baked, config, cond, u, state.copy())
    plain, _ = ref.run_frame(w, config, cond, u, state.copy())
    assert np.array_equal(scaled, exported)
    assert len(np.unique(scaled)) < len(np.unique(plain))
