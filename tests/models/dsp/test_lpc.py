"""models.dsp.lpc: all-pole envelopes fitted to the mel contract, and the LPC + noise baseline."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import freqz, lfilter

from models.dsp.features import SPEC, log_mel
from models.dsp.lpc import lpc_from_mel, lpc_noise_vocoder, mel_to_psd
from models.evaluation.evaluate import log_spectral_distance

SR = SPEC.sample_rate


def _resonator(freqs_hz: list[float], radius: float = 0.97) -> np.ndarray:
    """A(z) of an all-pole filter with one pole pair per frequency."""
    a = np.array([1.0])
    for f in freqs_hz:
        w = 2 * np.pi * f / SR
        a = np.convolve(a, [1.0, -2 * radius * np.cos(w), radius**2])
    return a


def _ar_signal(a: np.ndarray, seconds: float = 1.0, rms: float = 0.05, seed: int = 0) -> np.ndarray:
    y = lfilter([1.0], a, np.random.default_rng(seed).normal(size=int(seconds * SR)))
    return (y * rms / np.sqrt(np.mean(y**2))).astype(np.float32)


def test_psd_of_white_noise_is_its_variance() -> None:
    x = np.random.default_rng(1).normal(0, 0.1, SR).astype(np.float32)
    psd = mel_to_psd(log_mel(x))[2:-2]  # frames away from the padded ends
    k = (np.arange(psd.shape[1]) * SR / SPEC.n_fft > 200) & (
        np.arange(psd.shape[1]) * SR / SPEC.n_fft < 11000
    )
    assert abs(10 * np.log10(np.median(psd[:, k]) / 0.01)) < 1.5  # within 1.5 dB of sigma^2


def test_envelope_of_an_all_pole_signal_is_recovered() -> None:
    a_true = _resonator([500.0, 1500.0, 3000.0])
    x = _ar_signal(a_true)
    a, err = lpc_from_mel(log_mel(x), order=16)
    assert a.shape == (log_mel(x).shape[0], 17) and np.all(a[:, 0] == 1.0)
    # every frame's filter is stable: the roots of A(z) lie inside the unit circle
    assert max(np.abs(np.roots(row)).max() for row in a) < 1.0
    # the fitted envelope follows the true one over its top 40 dB (below that the fit's white-noise
    # correction fills the valleys, as speech coders do), in a frame away from the ends
    f = 30
    freqs = np.linspace(200, 8000, 400)
    _, h_fit = freqz([np.sqrt(err[f])], a[f], worN=freqs, fs=SR)
    _, h_true = freqz([1.0], a_true, worN=freqs, fs=SR)
    fit_db, true_db = 20 * np.log10(np.abs(h_fit)), 20 * np.log10(np.abs(h_true))
    top = true_db > true_db.max() - 40
    assert top.sum() > 50
    diff = (fit_db - fit_db[top].max()) - (true_db - true_db[top].max())
    assert np.median(np.abs(diff[top])) < 3.0
    assert fit_db[np.argmin(np.abs(freqs - 1500))] > fit_db[np.argmin(np.abs(freqs - 6000))] + 20


def test_noise_floor_tempers_a_sharp_resonance() -> None:
    # A sharp low resonance, as slow low-pitched speech gives: the white-noise correction tempers
    # the predictor's peak gain (how long it rings on what the sampler draws).
    x = _ar_signal(_resonator([250.0], radius=0.999), seed=4)
    mel = log_mel(x)[5:-5]

    def peak_gain_db(floor: float) -> float:
        a, _ = lpc_from_mel(mel, order=24, preemphasis=0.85, noise_floor=floor)
        return float(np.max(-20 * np.log10(np.abs(np.fft.rfft(a, 1024, axis=1)))))

    gains = [peak_gain_db(f) for f in (1e-4, 1e-3, 1e-2)]
    assert gains[0] > gains[1] + 3 > gains[2] + 6  # measured 54.6, 48.9, 40.2 dB


def test_noise_vocoder_matches_level_and_envelope() -> None:
    x = _ar_signal(_resonator([700.0, 2200.0]), seconds=1.5, seed=2)
    mel = log_mel(x)
    y = lpc_noise_vocoder(mel, seed=0)
    assert y.dtype == np.float32 and y.shape == (mel.shape[0] * SPEC.hop_length,)
    level_db = 10 * np.log10(np.mean(y[: x.size] ** 2) / np.mean(x**2))
    assert abs(level_db) < 2.0
    # far closer to the original's spectrum than white noise of the same level
    white = np.random.default_rng(3).normal(0, np.sqrt(np.mean(x**2)), x.size)
    assert log_spectral_distance(x, y) + 5 < log_spectral_distance(x, white)
    assert np.array_equal(y, lpc_noise_vocoder(mel, seed=0))  # seeded


def test_vectorised_levinson_equals_a_toeplitz_solve() -> None:
    from scipy.linalg import solve_toeplitz

    from models.dsp.lpc import levinson

    x = np.random.default_rng(5).normal(size=(4, 3000))
    x[:, 1:] += 0.9 * x[:, :-1]  # correlated, so the solution is not trivial
    r = np.array([[np.dot(row[: row.size - k], row[k:]) for k in range(17)] for row in x])
    r = np.vstack([r, np.zeros(17)])  # and a silent frame
    a, err = levinson(r)
    for f in range(4):
        np.testing.assert_allclose(a[f, 1:], solve_toeplitz(r[f, :16], -r[f, 1:]), atol=1e-10)
        assert err[f] == pytest.approx(r[f, 0] + np.dot(a[f, 1:], r[f, 1:]), rel=1e-9)
    assert np.array_equal(a[4], np.eye(1, 17)[0]) and err[4] == 0.0


@pytest.mark.parametrize("preemphasis", [0.0, 0.85])
def test_autocorrelation_lags_equal_the_inverse_fft_of_the_psd(preemphasis: float) -> None:
    """lpc_from_mel computes only the lags its order needs (a cosine basis); they are the first
    lags of the inverse real FFT of the (pre-emphasised) power spectrum, lag-windowed, so the fit
    is the Levinson solution of those."""
    from models.dsp.lpc import LAG_WINDOW_HZ, levinson

    x = _ar_signal(_resonator([700.0, 2200.0]), seconds=0.5, seed=3)
    mel = log_mel(x)
    order, floor = 12, 1e-3
    psd = mel_to_psd(mel)
    if preemphasis:
        psd = psd * np.abs(1 - preemphasis * np.exp(-1j * np.linspace(0, np.pi, psd.shape[1]))) ** 2
    r = np.fft.irfft(psd, n=SPEC.n_fft, axis=1)[:, : order + 1]
    r = r * np.exp(-0.5 * (2 * np.pi * LAG_WINDOW_HZ * np.arange(order + 1) / SR) ** 2)
    r[:, 0] *= 1 + floor
    a_fft, err_fft = levinson(r)
    a, err = lpc_from_mel(mel, order, preemphasis, noise_floor=floor)
    assert np.allclose(a, a_fft, rtol=0, atol=1e-9)
    assert np.allclose(err, err_fft, rtol=1e-9, atol=0)
    assert np.abs(a[:, 1:]).max() > 0.5  # a real resonance was fitted
