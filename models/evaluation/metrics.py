"""Diagnostic metrics, pure numpy/scipy: log-spectral distance (whole, voiced/unvoiced, per
band), mel-cepstral distortion, periodicity and F0 error, band bias."""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
from scipy.fft import dct
from scipy.signal import butter, sosfiltfilt

from models.dsp.features import SPEC, log_mel, magnitude_spectrogram
from models.dsp.pitch import parabolic_shift

logger = logging.getLogger(__name__)


N_CEPSTRA = 24
ACTIVE_DB = 40.0
POWER_FLOOR = 1e-10  # -100 dB re full scale: keeps log finite for digital silence


class EvalError(ValueError):
    """Bad evaluation input (missing corpus, no test utterances, no models)."""


# --- metrics (pure) -------------------------------------------------------------------------------


def _align(ref: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(ref.shape[0], out.shape[0])
    if n == 0:
        raise ValueError("cannot compare empty signals")
    return ref[:n].astype(np.float64), out[:n].astype(np.float64)


def active_frames(ref_power: np.ndarray, within_db: float = ACTIVE_DB) -> np.ndarray:
    """Frames whose energy is within `within_db` of the loudest: bool [frames]."""
    energy_db = 10 * np.log10(ref_power.sum(axis=1) + POWER_FLOOR)
    return energy_db >= energy_db.max() - within_db


def _power_spectra(ref: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power spectrograms float64 [frames, bins] of two sample-aligned signals (truncated to the
    shorter one), and the frames that are active in `ref` (bool [frames])."""
    ref, out = _align(ref, out)
    p_ref = magnitude_spectrogram(ref) ** 2
    p_out = magnitude_spectrogram(out) ** 2
    return p_ref, p_out, active_frames(p_ref)


def _db_diff(ref: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Power of `ref` minus power of `out` in dB per STFT frame and bin, float64 [frames, bins],
    and `ref`'s active frames (as _power_spectra)."""
    p_ref, p_out, active = _power_spectra(ref, out)
    return 10 * np.log10(p_ref + POWER_FLOOR) - 10 * np.log10(p_out + POWER_FLOOR), active


def log_spectral_distance(ref: np.ndarray, out: np.ndarray) -> float:
    """LSD in dB between two sample-aligned signals float [L] (truncated to the shorter one)."""
    diff, active = _db_diff(ref, out)
    return float(np.mean(np.sqrt(np.mean(diff[active] ** 2, axis=1))))


PITCH_HZ = (100.0, 400.0)  # the lags a voiced frame's period is looked for at (slt: ~130-280 Hz)
VOICED_THRESHOLD = 0.6  # normalised autocorrelation peak above which a frame counts as voiced
VOICING_KEYS = ("periodicity_original", "periodicity", "f0_error_cents", "vuv_error")


def pitch_track(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per STFT frame (centred, as magnitude_spectrogram's): the highest normalised autocorrelation
    of the 50 ms window at a lag in PITCH_HZ, float [frames] in [-1, 1] (0 for silent frames), and
    that lag in samples, float [frames] (parabolic interpolation between the integer lags)."""
    x = np.asarray(audio, dtype=np.float64)
    win, hop = SPEC.win_length, SPEC.hop_length
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, win // 2), win)[::hop]
    frames = frames[: x.shape[0] // hop + 1]
    frames = frames - frames.mean(axis=1, keepdims=True)
    lo, hi = (round(SPEC.sample_rate / f) for f in reversed(PITCH_HZ))
    n = 1 << (win + hi).bit_length()  # zero padding: a linear, not circular, autocorrelation
    r = np.fft.irfft(np.abs(np.fft.rfft(frames, n, axis=1)) ** 2, n, axis=1)
    energy = np.maximum(r[:, 0], 1e-12)
    k = lo + np.argmax(r[:, lo : hi + 1], axis=1)
    rows = np.arange(r.shape[0])
    left, mid, right = r[rows, k - 1], r[rows, k], r[rows, np.minimum(k + 1, r.shape[1] - 1)]
    shift = parabolic_shift(left, mid, right)
    peak = np.where(r[:, 0] > 1e-12, mid / energy, 0.0)
    return peak, k + np.clip(shift, -0.5, 0.5)


def periodicity(audio: np.ndarray) -> np.ndarray:
    """The first half of pitch_track: how periodic each frame is, float [frames]."""
    return pitch_track(audio)[0]


def voicing_scores(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """How well `out` keeps the voice's harmonics, over the active frames of `ref`.

    periodicity_original / periodicity: mean periodicity of ref / out over ref's voiced frames
    (noise through the right envelope scores near 0); f0_error_cents: median |pitch difference|
    over the frames voiced in both (the standard F0 error, robust to the odd octave slip);
    vuv_error:
    the fraction of active frames whose voiced/unvoiced decision differs. NaN where undefined.
    """
    ref, out = _align(ref, out)
    active = active_frames(magnitude_spectrogram(ref) ** 2)
    (per_ref, lag_ref), (per_out, lag_out) = pitch_track(ref), pitch_track(out)
    v_ref, v_out = per_ref > VOICED_THRESHOLD, per_out > VOICED_THRESHOLD
    voiced, both = v_ref & active, v_ref & v_out & active
    cents = 1200 * np.log2(lag_ref[both] / lag_out[both])  # lag is 1 / F0
    return {
        "periodicity_original": float(per_ref[voiced].mean()) if voiced.any() else math.nan,
        "periodicity": float(per_out[voiced].mean()) if voiced.any() else math.nan,
        "f0_error_cents": float(np.median(np.abs(cents))) if both.any() else math.nan,
        "vuv_error": float(np.mean(v_ref[active] != v_out[active])),
    }


def lsd_voiced_unvoiced(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """LSD (dB) over the active frames of `ref` that are voiced, and over those that are not
    (periodicity above / below VOICED_THRESHOLD); NaN where there are none.

    The split matters because the two halves have different floors. In an unvoiced frame the
    original is noise: a vocoder that samples noise of exactly the right spectrum still scores
    ~7.9 dB (two independent noise spectra), while one that outputs the smooth expected spectrum,
    as Griffin-Lim from a mel does, scores ~6.1 dB. In a voiced frame both can approach 0.
    """
    diff, active = _db_diff(ref, out)
    frame_lsd = np.sqrt(np.mean(diff**2, axis=1))
    voiced = periodicity(_align(ref, out)[0]) > VOICED_THRESHOLD
    v, u = frame_lsd[active & voiced], frame_lsd[active & ~voiced]
    return (float(v.mean()) if v.size else math.nan, float(u.mean()) if u.size else math.nan)


BANDS_HZ = (0, 150, 500, 1000, 2000, 4000, 8000, 12000)
"""Edges of the bands `band_bias_db` reports: the voice's F0/first-harmonic region, F1, F2, ..."""


def band_index(bins: int) -> np.ndarray:
    """Band of BANDS_HZ each STFT bin falls in: int [bins], 0 .. len(BANDS_HZ) - 2."""
    freqs = np.arange(bins) * SPEC.sample_rate / SPEC.n_fft
    return np.digitize(freqs, BANDS_HZ[1:-1])


def band_bias_db(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Energy of `out` minus energy of `ref` per band of BANDS_HZ (dB, active frames): float
    [bands].

    LSD says how far two spectra are; this says which way: a vocoder that is too quiet where the
    voice is loud (or booms below it) shows here as a sign, not only as a larger distance.
    """
    p_ref, p_out, active = _power_spectra(ref, out)
    p_ref, p_out, band = p_ref[active], p_out[active], band_index(p_ref.shape[1])
    e_ref = np.array([p_ref[:, band == b].sum() for b in range(len(BANDS_HZ) - 1)])
    e_out = np.array([p_out[:, band == b].sum() for b in range(len(BANDS_HZ) - 1)])
    return 10 * np.log10((e_out + POWER_FLOOR) / (e_ref + POWER_FLOOR))


def band_lsd_db(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """RMS dB difference over the bins of each band of BANDS_HZ (active frames): float [bands].

    Where the LSD comes from: a vocoder whose harmonics are smeared into noise scores badly in the
    bands the harmonics are resolved in, even when its band energy (band_bias_db) is right.
    """
    diff, active = _db_diff(ref, out)
    diff, band = diff[active], band_index(diff.shape[1])
    return np.sqrt(np.array([np.mean(diff[:, band == b] ** 2) for b in range(len(BANDS_HZ) - 1)]))


def _band_pass(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Zero-phase 4th-order Butterworth band of x (low-pass from 0 Hz, high-pass up to Nyquist)."""
    nyquist = SPEC.sample_rate / 2
    if lo <= 0:
        sos = butter(4, hi, btype="lowpass", fs=SPEC.sample_rate, output="sos")
    elif hi >= nyquist:
        sos = butter(4, lo, btype="highpass", fs=SPEC.sample_rate, output="sos")
    else:
        sos = butter(4, [lo, hi], btype="bandpass", fs=SPEC.sample_rate, output="sos")
    return sosfiltfilt(sos, x)


def band_periodicity(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """How periodic `out` is in each band of BANDS_HZ over the original's voiced active frames:
    the normalised correlation of the band's 50 ms window with the same band one pitch period
    earlier (the original's period, pitch_track), mean over those frames: float [bands], NaN
    without voiced frames. band_periodicity(ref, ref) is the original's own.

    It tells what each band of the original is: harmonics (near 1) or noise (near 0). Where the
    original is noise, even in voiced frames, a sampling vocoder can only match it with other
    noise, and per-bin LSD then has the ~7.9 dB noise-against-noise floor of lsd_voiced_unvoiced.
    """
    ref, out = _align(ref, out)
    per, lag = pitch_track(ref)
    active = active_frames(magnitude_spectrogram(ref) ** 2)
    n = min(per.shape[0], active.shape[0])
    frames = np.flatnonzero((per[:n] > VOICED_THRESHOLD) & active[:n])
    win, hop = SPEC.win_length, SPEC.hop_length
    starts = frames * hop - win // 2  # pitch_track's frames are centred
    lags = np.round(lag[frames]).astype(int)
    keep = (starts - lags >= 0) & (starts + win <= out.shape[0])
    starts, lags = starts[keep], lags[keep]
    result = np.full(len(BANDS_HZ) - 1, math.nan)
    if starts.size == 0:
        return result
    idx = starts[:, None] + np.arange(win)[None, :]
    for b, (lo, hi) in enumerate(itertools.pairwise(BANDS_HZ)):
        y = _band_pass(out.astype(np.float64), lo, hi)
        seg, prev = y[idx], y[idx - lags[:, None]]
        den = np.sqrt(np.sum(seg * seg, axis=1) * np.sum(prev * prev, axis=1))
        ok = den > 1e-12
        if ok.any():
            result[b] = float(np.mean(np.sum(seg * prev, axis=1)[ok] / den[ok]))
    return result


def mel_cepstrum(audio: np.ndarray, n: int = N_CEPSTRA) -> np.ndarray:
    """Cepstra c_1..c_n of the natural-log magnitude mel spectrum: float64 [frames, n].

    Scaled as a true cepstrum, ln|M(w)| = c_0 + 2 sum_k c_k cos(k w), as SPTK's mel-cepstra are,
    so the usual MCD formula applies: scipy's unnormalised DCT-II is 2 sum_n x_n cos(..), hence /
    2N.
    """
    log_amp = log_mel(audio).astype(np.float64)  # [frames, 80] natural-log magnitude
    return dct(log_amp, type=2, axis=1)[:, 1 : n + 1] / (2 * log_amp.shape[1])


def mel_cepstral_distortion(ref: np.ndarray, out: np.ndarray) -> float:
    """MCD in dB between two sample-aligned signals float [L] (truncated to the shorter one)."""
    ref, out = _align(ref, out)
    active = active_frames(magnitude_spectrogram(ref) ** 2)
    d = mel_cepstrum(ref)[active] - mel_cepstrum(out)[active]
    return float(np.mean(10.0 / math.log(10.0) * np.sqrt(2.0 * np.sum(d**2, axis=1))))


def nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan
