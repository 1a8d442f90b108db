"""Linear prediction from the mel contract: the spectral envelope of each frame as an all-pole
filter.

LPCNet's observation is that a vocoder need not learn the spectral envelope sample by sample: the
features already carry it, and an all-pole filter 1/A(z) fitted to them shapes any excitation into
it (and shapes the sampling noise like the speech, which log-spectral distances reward). Here the
envelope comes from the 80-band log-mel of models.dsp.features: band magnitudes are spread back over
the FFT bins, turned into a power spectral density, and the autocorrelation (its inverse FFT) is
solved for A(z) by Levinson-Durbin, vectorised over frames (only the lags the order needs are
computed, as one product with a cosine basis).

`lpc_noise_vocoder` drives each frame's filter with white noise of the predicted error power: a
vocoder with no learned part at all, which `sparrow eval` reports as a baseline ("lpc-noise").
Shapes: N = mel frames, M = n_mels, K = n_fft // 2 + 1 bins, P = order.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.signal import lfilter, lfiltic

from models.dsp.features import SPEC, MelSpec, hann_window, mel_filterbank

DEFAULT_ORDER = 24  # poles: 24 kHz speech keeps ~12 formant pairs below Nyquist
NOISE_FLOOR = 1e-3
"""White-noise correction of the fit (r[0] *= 1 + floor): it fills the envelope's valleys and
tempers its sharpest resonances; with 1e-4 the predictor can ring at a 30-40 dB low resonance in a
slow utterance until sampling runs away to full scale, with 1e-3 it does not."""
LAG_WINDOW_HZ = 60.0  # Gaussian lag window: widens sharp peaks so the fit stays well conditioned


def mel_to_psd(log_mel: np.ndarray, spec: MelSpec = SPEC) -> np.ndarray:
    """Log-mel [N, M] -> smooth power spectral density per sample [N, K] (float64).

    Each band's magnitude is its mel value over its filter's area; a bin's magnitude is the mean of
    the bands covering it, weighted by the filters. |STFT|^2 of a unit-variance white signal is
    sum(window^2), so dividing by that gives power per sample.
    """
    spread, window_power = _inversion(spec)
    magnitude = np.exp(np.asarray(log_mel, np.float64)) @ spread  # [N, K]
    return magnitude**2 / window_power


@functools.lru_cache(maxsize=4)
def _inversion(spec: MelSpec) -> tuple[np.ndarray, float]:
    """(spread [M, K], sum(window^2)): band value -> per-bin magnitude in one matrix product."""
    fb = mel_filterbank(spec).astype(np.float64)  # [M, K]
    spread = (
        fb / np.maximum(fb.sum(axis=1, keepdims=True), 1e-12) / np.maximum(fb.sum(axis=0), 1e-12)
    )
    spread.setflags(write=False)
    window = hann_window(spec)  # the mel contract's own
    return spread, float(np.sum(window**2))


def lpc_from_mel(
    log_mel: np.ndarray,
    order: int = DEFAULT_ORDER,
    preemphasis: float = 0.0,
    spec: MelSpec = SPEC,
    noise_floor: float = NOISE_FLOOR,
) -> tuple[np.ndarray, np.ndarray]:
    """All-pole fit of every frame: (A [N, P + 1] with A[:, 0] = 1, error power [N]).

    The frame's envelope is approximately error_power / |A(e^jw)|^2. With `preemphasis` c the fit
    is to the spectrum of x[n] - c x[n-1] (as the vocoder's pre-emphasised output domain).
    """
    spread, _ = _inversion(spec)
    magnitude = np.exp(np.asarray(log_mel, np.float64)) @ spread  # [N, K]
    r = (magnitude * magnitude) @ _lag_basis(order, preemphasis, spec)  # [N, P + 1]
    r[:, 0] *= 1.0 + noise_floor  # white-noise correction
    return levinson(r)


@functools.lru_cache(maxsize=8)
def _lag_basis(order: int, preemphasis: float, spec: MelSpec) -> np.ndarray:
    """[K, P + 1]: squared bin magnitudes -> the lag-windowed autocorrelation at lags 0..P.

    The autocorrelation is the inverse real FFT of the power spectrum (mel_to_psd, times the
    pre-emphasis gain), r[l] = sum_k w_k psd[k] cos(2 pi k l / n_fft) / n_fft with w = 1 at DC
    and Nyquist and 2 between; only P + 1 of its n_fft lags are used, so one [K, P + 1] product
    does it in a seventh of the time of the whole FFT (the LPC fit is in every stream's path),
    with the window power, the gain and the Gaussian lag window folded into its columns.
    """
    _, window_power = _inversion(spec)
    bins = spec.n_fft // 2 + 1
    k = np.arange(bins)[:, None]
    lags = np.arange(order + 1)
    weight = np.full(bins, 2.0)
    weight[0] = 1.0
    if spec.n_fft % 2 == 0:
        weight[-1] = 1.0
    if preemphasis:
        weight = weight * _emphasis_gain(preemphasis, bins)
    # (k l) mod n_fft keeps the cosine's argument in [0, 2 pi): exact integers, one rounding
    cos = np.cos(2 * np.pi * ((k * lags[None, :]) % spec.n_fft) / spec.n_fft)
    lag_window = np.exp(-0.5 * (2 * np.pi * LAG_WINDOW_HZ * lags / spec.sample_rate) ** 2)
    basis = weight[:, None] * cos * (lag_window / (spec.n_fft * window_power))[None, :]
    basis.setflags(write=False)
    return basis


@functools.lru_cache(maxsize=8)
def _emphasis_gain(coef: float, bins: int) -> np.ndarray:
    """|1 - coef e^{-jw}|^2 on `bins` frequencies from 0 to Nyquist."""
    gain = np.abs(1.0 - coef * np.exp(-1j * np.linspace(0.0, np.pi, bins))) ** 2
    gain.setflags(write=False)
    return gain


def levinson(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Levinson-Durbin on autocorrelations r [N, P + 1], all frames at once: (A [N, P + 1], error
    power [N]). A frame whose r[0] is not positive (digital silence) gets A = 1 and error 0."""
    n, p1 = r.shape
    a = np.zeros((n, p1))
    a[:, 0] = 1.0
    live = r[:, 0] > 0.0
    err = np.where(live, r[:, 0], 1.0)  # dead frames divide by 1 and keep k = 0
    for i in range(1, p1):
        acc = np.einsum("nj,nj->n", a[:, :i], r[:, i:0:-1])  # sum_j a_j r[i - j], j < i
        k = np.where(live, -acc / err, 0.0)
        a[:, 1 : i + 1] = a[:, 1 : i + 1] + k[:, None] * a[:, i - 1 :: -1][:, :i]
        err = err * (1.0 - k * k)
    return a, np.where(live, np.maximum(err, 0.0), 0.0)


def lpc_noise_vocoder(
    log_mel: np.ndarray,
    seed: int = 0,
    order: int = DEFAULT_ORDER,
    preemphasis: float = 0.85,
    spec: MelSpec = SPEC,
) -> np.ndarray:
    """Log-mel [N, M] -> float32 audio [N * hop]: white noise through each frame's 1/A(z).

    Frame f fills samples [f * hop, (f + 1) * hop) as the neural vocoder does (`synthesize`); the
    result is de-emphasised when fitted in that domain.
    """
    a, err = lpc_from_mel(log_mel, order, preemphasis, spec)
    hop = spec.hop_length
    rng = np.random.default_rng(seed)
    excitation = rng.standard_normal((a.shape[0], hop)) * np.sqrt(err)[:, None]
    y = synthesize(excitation.ravel(), a, hop)
    if preemphasis:
        y = lfilter([1.0], [1.0, -preemphasis], y)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def synthesize(x: np.ndarray, a: np.ndarray, hop: int) -> np.ndarray:
    """x [L] through each frame's all-pole filter 1/A(z), a [N, P + 1] with a[:, 0] = 1: frame f
    filters samples [f * hop, (f + 1) * hop). Direct form I across frames (the memory is the
    previous output samples), so coefficient changes at frame edges do not click."""
    order = a.shape[1] - 1
    y = np.zeros(x.size)
    for f in range(min(a.shape[0], -(-x.size // hop))):
        start = f * hop
        past = y[max(0, start - order) : start][::-1]  # most recent first
        y[start : start + hop], _ = lfilter(
            [1.0], a[f], x[start : start + hop], zi=lfiltic([1.0], a[f], past)
        )
    return y
