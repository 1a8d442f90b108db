"""`sparrow eval`: vocoding quality on held-out utterances, through the server's own runtime path.

For each `split == test` utterance of the corpus, the original log-mel is vocoded by every compiled
model given (TVM runtime, `VocoderRuntime.generate`, exactly what the server runs) and by
Griffin-Lim from the same mel. The headline scores are perceptual (models.evaluation.perceptual:
DNSMOS P.835 / P.808 and ASR word error rate, printed first); below them, as diagnostics, each
output is compared with the original audio:

- LSD, log-spectral distance (dB): per frame sqrt(mean_k (10 log10 P_ref - 10 log10 P_out)^2) over
  the STFT bins of models.dsp.features (2048-point FFT, 50 ms window, 12.5 ms hop), averaged over frames.
- MCD, mel-cepstral distortion (dB): (10 / ln 10) sqrt(2 sum_{d=1..24} (c_d - c'_d)^2) per frame,
  where c is the cepstrum (DCT-II, true-cepstrum scaling) of the natural-log magnitude mel spectrum
  (80 bands); c_0 (loudness) is left out as usual. A filterbank cepstrum, not SPTK's all-pass
  mel-cepstrum: the scale is the usual one, but compare rows with each other first.

Both are computed over active frames only (reference frame energy within 40 dB of the utterance's
loudest frame): leading/trailing silence would otherwise dominate with arbitrary values.
The outputs are sample-aligned with the original (same mel, same hop), so no time warping is used.

No torch here: the TVM runtime, numpy/scipy, and (optionally) librosa for Griffin-Lim and
matplotlib for the plots.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.fft import dct
from scipy.ndimage import uniform_filter1d
from scipy.signal import butter, sosfiltfilt

from models.dsp.features import SPEC, log_mel, magnitude_spectrogram, mel_filterbank
from models.dsp.lpc import lpc_noise_vocoder
from models.dsp.pitch import parabolic_shift
from models.evaluation import perceptual

logger = logging.getLogger(__name__)

N_CEPSTRA = 24
ACTIVE_DB = 40.0
POWER_FLOOR = 1e-10  # -100 dB re full scale: keeps log finite for digital silence


class EvalError(ValueError):
    """Bad evaluation input (missing corpus, no test utterances, no models)."""


# --- metrics (pure) --------------------------------------------------------------------------------


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
    over the frames voiced in both (the standard F0 error, robust to the odd octave slip); vuv_error:
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


def _band_index(bins: int) -> np.ndarray:
    """Band of BANDS_HZ each STFT bin falls in: int [bins], 0 .. len(BANDS_HZ) - 2."""
    freqs = np.arange(bins) * SPEC.sample_rate / SPEC.n_fft
    return np.digitize(freqs, BANDS_HZ[1:-1])


def band_bias_db(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Energy of `out` minus energy of `ref` per band of BANDS_HZ (dB, active frames): float [bands].

    LSD says how far two spectra are; this says which way: a vocoder that is too quiet where the
    voice is loud (or booms below it) shows here as a sign, not only as a larger distance.
    """
    p_ref, p_out, active = _power_spectra(ref, out)
    p_ref, p_out, band = p_ref[active], p_out[active], _band_index(p_ref.shape[1])
    e_ref = np.array([p_ref[:, band == b].sum() for b in range(len(BANDS_HZ) - 1)])
    e_out = np.array([p_out[:, band == b].sum() for b in range(len(BANDS_HZ) - 1)])
    return 10 * np.log10((e_out + POWER_FLOOR) / (e_ref + POWER_FLOOR))


def band_lsd_db(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """RMS dB difference over the bins of each band of BANDS_HZ (active frames): float [bands].

    Where the LSD comes from: a vocoder whose harmonics are smeared into noise scores badly in the
    bands the harmonics are resolved in, even when its band energy (band_bias_db) is right.
    """
    diff, active = _db_diff(ref, out)
    diff, band = diff[active], _band_index(diff.shape[1])
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
    so the usual MCD formula applies: scipy's unnormalised DCT-II is 2 sum_n x_n cos(..), hence / 2N.
    """
    log_amp = log_mel(audio).astype(np.float64)  # [frames, 80] natural-log magnitude
    return dct(log_amp, type=2, axis=1)[:, 1 : n + 1] / (2 * log_amp.shape[1])


def mel_cepstral_distortion(ref: np.ndarray, out: np.ndarray) -> float:
    """MCD in dB between two sample-aligned signals float [L] (truncated to the shorter one)."""
    ref, out = _align(ref, out)
    active = active_frames(magnitude_spectrogram(ref) ** 2)
    d = mel_cepstrum(ref)[active] - mel_cepstrum(out)[active]
    return float(np.mean(10.0 / math.log(10.0) * np.sqrt(2.0 * np.sum(d**2, axis=1))))


# --- systems ---------------------------------------------------------------------------------------


LIBROSA_STFT = {
    "n_fft": SPEC.n_fft,
    "hop_length": SPEC.hop_length,
    "win_length": SPEC.win_length,
    "window": "hann",  # periodic, as models.dsp.features' window
    "center": True,
}
"""models.dsp.features' STFT in librosa's spelling, for the systems that need its phase too."""


def griffin_lim(mel: np.ndarray, n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """Log-mel [N, 80] -> float32 audio [(N - 1) * hop]: NNLS mel inversion + Griffin-Lim (librosa)."""
    import librosa  # optional: part of the `train` extra

    magnitude_mel = np.exp(mel.astype(np.float64)).T  # [80, N]
    linear = librosa.util.nnls(mel_filterbank().astype(np.float64), magnitude_mel)  # [bins, N]
    audio = librosa.griffinlim(linear, n_iter=n_iter, random_state=seed, **LIBROSA_STFT)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


NOISE_ORACLE_SPLIT_HZ = 4000.0  # the original is noise above this even when voiced (band_periodicity)
NOISE_ORACLE_SMOOTH_BINS = 8  # +-94 Hz: wider than the window's main lobe, narrower than a formant


def noise_oracle(audio: np.ndarray, seed: int = 0) -> np.ndarray:
    """The original with its noise drawn afresh: float32 [L] from the original float [L].

    What a sampling vocoder that got everything else exactly right would output: in the original's
    voiced frames (pitch_track) the STFT below NOISE_ORACLE_SPLIT_HZ is kept as it is (harmonics and
    all, even the bit of noise among them, so this errs in the oracle's favour); every other frame
    and bin becomes fresh Gaussian noise whose expected power is the original's own, smoothed over
    +-NOISE_ORACLE_SMOOTH_BINS bins. No vocoder is told more than the mel, so none should expect to
    beat it by much: it calibrates how low a per-bin LSD can go when the noise is sampled rather
    than copied (the smoothing leaks a little of the original's own draw into the envelope, which
    again favours the oracle). A reference from the original audio, not a vocoder.
    """
    import librosa  # optional: part of the `train` extra, as for griffin_lim

    x = np.asarray(audio, dtype=np.float64)
    spectrum = librosa.stft(x, **LIBROSA_STFT)  # [bins, frames]
    envelope = uniform_filter1d(
        np.abs(spectrum) ** 2, size=2 * NOISE_ORACLE_SMOOTH_BINS + 1, axis=0, mode="nearest"
    )
    # Unit-variance white noise has expected bin power sum(window^2) = 3/8 of the window length.
    noise = np.random.default_rng(seed).standard_normal(x.shape[0])
    noise_spectrum = librosa.stft(noise, **LIBROSA_STFT) / math.sqrt(0.375 * SPEC.win_length)
    voiced = np.zeros(spectrum.shape[1], dtype=bool)
    per = pitch_track(x)[0] > VOICED_THRESHOLD
    n = min(per.shape[0], voiced.shape[0])
    voiced[:n] = per[:n]
    freqs = np.arange(spectrum.shape[0]) * SPEC.sample_rate / SPEC.n_fft
    keep = (freqs < NOISE_ORACLE_SPLIT_HZ)[:, None] & voiced[None, :]
    redrawn = np.where(keep, spectrum, noise_spectrum * np.sqrt(envelope))
    return librosa.istft(redrawn, length=x.shape[0], **LIBROSA_STFT).astype(np.float32)


def vocode_runtime(runtime: object, mel: np.ndarray, seed: int = 0) -> np.ndarray:
    """Whole-mel vocoding through a VocoderStream (the server's path, redraws included): float32 [N * hop]."""
    return vocode_counted(runtime, mel, seed)[0]


def vocode_counted(runtime: object, mel: np.ndarray, seed: int = 0) -> tuple[np.ndarray, int, int]:
    """vocode_runtime, and how many draws the stream redid and how many frames still reached full
    scale (VocoderConfig.clip_retries): (float32 [N * hop], redrawn, clipped)."""
    stream = runtime.open_stream(seed=seed)  # type: ignore[attr-defined]
    stream.push(mel)
    stream.finish()
    frames = [stream.step() for _ in range(stream.pending())]
    audio = np.concatenate(frames).astype(np.float32) if frames else np.zeros(0, np.float32)
    return audio, stream.frames_redrawn, stream.frames_clipped


# --- corpus ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestUtterance:
    id: str
    audio: np.ndarray  # float32 [L]
    mel: np.ndarray  # float32 [L // hop + 1, 80]
    text: str


def load_test_set(
    corpus: Path, limit: int | None, max_seconds: float | None, split: str = "test"
) -> list[TestUtterance]:
    meta = corpus / "metadata.csv"
    if not meta.exists():
        raise EvalError(f"no corpus at {corpus} (expected {meta}); run `sparrow data` first")
    with meta.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("split") == split]
    rows.sort(key=lambda r: r["id"])
    out = []
    for row in rows[:limit] if limit else rows:
        audio, sr = sf.read(corpus / "wav" / f"{row['id']}.wav", dtype="float32")
        mel = np.load(corpus / "mel" / f"{row['id']}.npy").astype(np.float32)
        if sr != SPEC.sample_rate:
            raise EvalError(f"{row['id']}: sample rate {sr}, expected {SPEC.sample_rate}")
        if max_seconds:
            frames = max(1, int(max_seconds * SPEC.sample_rate / SPEC.hop_length))
            mel, audio = mel[:frames], audio[: frames * SPEC.hop_length]
        out.append(TestUtterance(row["id"], audio, mel, row.get("text", "")))
    if not out:
        raise EvalError(f"no {split!r} utterances in {meta}")
    return out


# --- report ----------------------------------------------------------------------------------------


def evaluate(
    utterances: list[TestUtterance],
    systems: dict[str, object],
    *,
    griffin_lim_iters: int | None = 32,
    lpc_noise: bool = True,
    oracle: bool = True,
    seed: int = 0,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, np.ndarray]]]:
    """Score every system on every utterance. Returns (summary, audio by utterance and system).

    systems: name -> a VocoderRuntime (anything with generate(mel, seed)). Baselines from the same
    mel: Griffin-Lim ("griffin-lim", unless griffin_lim_iters is None) and white noise through the
    mel's LPC envelope ("lpc-noise", models.dsp.lpc, unless lpc_noise is False); and, as a yardstick
    rather than a baseline, the original with its noise redrawn ("noise-oracle", noise_oracle,
    unless oracle is False).
    summary[name] = {lsd_db, mcd_db, rtf, n, lsd_max_db (the worst utterance: a runaway shows
    here), lsd_voiced_db and lsd_unvoiced_db (lsd_voiced_unvoiced, mean over the utterances that
    have such frames), the VOICING_KEYS of voicing_scores (likewise), band_bias_db and band_lsd_db
    (means over utterances of those functions), per_utterance (LSD, MCD lists)}.
    """
    names = list(systems) + ([] if griffin_lim_iters is None else ["griffin-lim"])
    names += ["lpc-noise"] if lpc_noise else []
    names += ["noise-oracle"] if oracle else []
    per: dict[str, dict[str, list[float]]] = {
        n: {
            "lsd_db": [],
            "mcd_db": [],
            "seconds": [],
            "bias": [],
            "band_lsd": [],
            "band_periodicity": [],
            "voiced": [],
            "unvoiced": [],
            "redrawn": [],
            "clipped": [],
            **{key: [] for key in VOICING_KEYS},
        }
        for n in names
    }
    audio_out: dict[str, dict[str, np.ndarray]] = {}
    total_audio = 0.0
    original_periodicity = []
    for utt in utterances:
        outs: dict[str, np.ndarray] = {"original": utt.audio}
        original_periodicity.append(band_periodicity(utt.audio, utt.audio))
        total_audio += utt.audio.shape[0] / SPEC.sample_rate
        for name in names:
            t0 = time.perf_counter()
            if name == "griffin-lim":
                y = griffin_lim(utt.mel, n_iter=griffin_lim_iters or 32, seed=seed)
            elif name == "lpc-noise":
                y = lpc_noise_vocoder(utt.mel, seed=seed)
            elif name == "noise-oracle":
                y = noise_oracle(utt.audio, seed=seed)
            else:
                y, redrawn, clipped = vocode_counted(systems[name], utt.mel, seed=seed)
                per[name]["redrawn"].append(redrawn)
                per[name]["clipped"].append(clipped)
            per[name]["seconds"].append(time.perf_counter() - t0)
            per[name]["lsd_db"].append(log_spectral_distance(utt.audio, y))
            per[name]["mcd_db"].append(mel_cepstral_distortion(utt.audio, y))
            per[name]["bias"].append(band_bias_db(utt.audio, y))
            per[name]["band_lsd"].append(band_lsd_db(utt.audio, y))
            per[name]["band_periodicity"].append(band_periodicity(utt.audio, y))
            voiced, unvoiced = lsd_voiced_unvoiced(utt.audio, y)
            per[name]["voiced"].append(voiced)
            per[name]["unvoiced"].append(unvoiced)
            for key, value in voicing_scores(utt.audio, y).items():
                per[name][key].append(value)
            outs[name] = y[: utt.audio.shape[0]]
            logger.info(
                "%s %-20s LSD %.2f dB  MCD %.2f dB",
                utt.id,
                name,
                per[name]["lsd_db"][-1],
                per[name]["mcd_db"][-1],
            )
        audio_out[utt.id] = outs
    summary = {
        n: {
            "lsd_db": float(np.mean(v["lsd_db"])),
            "mcd_db": float(np.mean(v["mcd_db"])),
            "rtf": float(np.sum(v["seconds"]) / total_audio),
            "n": len(v["lsd_db"]),
            "lsd_max_db": float(np.max(v["lsd_db"])),
            "lsd_voiced_db": _nanmean(v["voiced"]),
            "lsd_unvoiced_db": _nanmean(v["unvoiced"]),
            **{key: _nanmean(v[key]) for key in VOICING_KEYS},
            "band_bias_db": [float(b) for b in np.mean(v["bias"], axis=0)],
            "band_lsd_db": [float(b) for b in np.mean(v["band_lsd"], axis=0)],
            "band_periodicity": [_nanmean(list(b)) for b in np.array(v["band_periodicity"]).T],
            "band_periodicity_original": [_nanmean(list(b)) for b in np.array(original_periodicity).T],
            # vocoders only (None for the baselines): draws redone, frames sent at full scale
            "frames_redrawn": int(np.sum(v["redrawn"])) if v["redrawn"] else None,
            "frames_clipped": int(np.sum(v["clipped"])) if v["clipped"] else None,
            "per_utterance": {"lsd_db": v["lsd_db"], "mcd_db": v["mcd_db"]},
        }
        for n, v in per.items()
    }
    return summary, audio_out


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def format_table(summary: dict[str, dict]) -> str:
    lines = [
        (
            "| system | LSD (dB) ↓ | worst utterance LSD | MCD (dB) ↓ | real-time factor | utterances "
            "| frames redrawn / clipped |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in summary.items():
        counts = "–" if m.get("frames_redrawn") is None else f"{m['frames_redrawn']} / {m['frames_clipped']}"
        lines.append(
            f"| {name} | {m['lsd_db']:.2f} | {m['lsd_max_db']:.2f} | {m['mcd_db']:.2f} "
            f"| {m['rtf']:.3f} | {m['n']} | {counts} |"
        )
    return "\n".join(lines)


def format_voicing_table(summary: dict[str, dict]) -> str:
    """LSD over voiced and unvoiced frames apart, and how well the harmonics come out."""
    lines = [
        (
            "| system | LSD voiced frames | LSD unvoiced frames | periodicity (voiced frames) "
            "| F0 error (median cents) | V/UV disagreement |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for name, m in summary.items():
        lines.append(
            f"| {name} | {m['lsd_voiced_db']:.2f} | {m['lsd_unvoiced_db']:.2f} "
            f"| {m['periodicity']:.2f} | {m['f0_error_cents']:.0f} | {m['vuv_error']:.1%} |"
        )
    return "\n".join(lines)


def _format_band_table(summary: dict[str, dict], key: str, fmt: str) -> str:
    edges = [f"{a / 1000:g}–{b / 1000:g} kHz" for a, b in itertools.pairwise(BANDS_HZ)]
    lines = ["| system | " + " | ".join(edges) + " |", "|---" * (len(edges) + 1) + "|"]
    for name, m in summary.items():
        lines.append(f"| {name} | " + " | ".join(format(b, fmt) for b in m[key]) + " |")
    return "\n".join(lines)


def format_bias_table(summary: dict[str, dict]) -> str:
    """Band energy of each system minus the original's (dB), mean over utterances."""
    return _format_band_table(summary, "band_bias_db", "+.1f")


def format_band_lsd_table(summary: dict[str, dict]) -> str:
    """RMS dB difference per band of each system (dB), mean over utterances."""
    return _format_band_table(summary, "band_lsd_db", ".1f")


def format_band_periodicity_table(summary: dict[str, dict]) -> str:
    """Periodicity per band over the original's voiced frames: the original's row, then each system's."""
    first = next(iter(summary.values()))
    rows = {"original": {"band_periodicity": first["band_periodicity_original"]}, **summary}
    return _format_band_table(rows, "band_periodicity", ".2f")


def save_spectrograms(path: Path, outs: dict[str, np.ndarray], title: str) -> None:
    """Side-by-side log spectrograms (original first) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(3, len(outs))
    nrows = -(-len(outs) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.4 * ncols, 2.4 * nrows), sharex=True, sharey=True, squeeze=False
    )
    for ax in axes.ravel()[len(outs) :]:
        ax.axis("off")
    top = None  # one colour scale for all panels, set by the first (the original)
    for ax, (name, y) in zip(axes.ravel(), outs.items()):
        db = 20 * np.log10(magnitude_spectrogram(y).T + 1e-5)
        top = float(db.max()) if top is None else top
        extent = (0, y.shape[0] / SPEC.sample_rate, 0, SPEC.sample_rate / 2000)
        ax.imshow(
            db, origin="lower", aspect="auto", extent=extent, vmin=top - 90, vmax=top, cmap="magma"
        )
        ax.set_title(name, fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("s")
    for ax in axes[:, 0]:
        ax.set_ylabel("kHz")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)


def write_quality_doc(
    path: Path,
    summary: dict[str, dict[str, float]],
    args: argparse.Namespace,
    plots: list[str],
    samples: list[str],
    manifests: dict[str, dict],
    headline: perceptual.Headline | None = None,
) -> None:
    models = "\n".join(
        f"- `{name}`: {m.get('description') or ''} (trained: {m.get('trained')}, ISA module used: "
        f"{m.get('_isa', '?')})"
        for name, m in manifests.items()
    )
    intro = (
        f"Measured with `sparrow eval --limit {args.limit} --max-seconds {args.max_seconds:g}` on the "
        "held-out (`split == test`) utterances of the Festival corpus: each original log-mel is vocoded "
        "through the TVM runtime (a `VocoderStream`, the server's own path, redraws included), by Griffin-Lim "
        "(32 iterations, NNLS mel inversion) and by `lpc-noise` (white noise through each frame's "
        "24-pole LPC envelope fitted to the mel, pre-emphasis 0.85: no learned part, models/dsp/lpc.py) "
        "from the same mel, and compared with the original audio. "
        "Lower is better for both metrics; the real-time factor is wall time / audio time on this shared "
        "machine (Griffin-Lim includes librosa); frames redrawn / clipped: draws the stream redid because "
        "the output reached full scale, and frames that still did after every redraw (the model's "
        "`clip_retries`)."
    )
    lsd = (
        "- **LSD** (log-spectral distance): RMS over STFT bins of the dB difference, averaged over active "
        "frames (within 40 dB of the loudest), 2048-point FFT, 50 ms window, 12.5 ms hop."
    )
    mcd = (
        "- **MCD** (mel-cepstral distortion): `10/ln10 * sqrt(2 * sum (c_d - c'_d)^2)` over cepstra 1..24 "
        "(true-cepstrum scaling) of the 80-band natural-log magnitude mel spectrum, active frames only; a "
        "filterbank cepstrum rather than SPTK's all-pass mel-cepstrum, so compare rows with each other first."
    )
    first = next(iter(summary.values()))
    voicing = (
        "Voicing (active frames; a frame is voiced when its 50 ms window has a normalised "
        f"autocorrelation peak above {VOICED_THRESHOLD:g} at a lag of {PITCH_HZ[0]:g}-{PITCH_HZ[1]:g} Hz):"
    )
    split = (
        "- **LSD voiced / unvoiced frames**: the LSD above over the original's voiced frames and over "
        "the rest. The two have different floors: in an unvoiced frame the original is noise, and a "
        "vocoder that samples noise of exactly the right spectrum still scores ~7.9 dB (two independent "
        "noise spectra), while the smooth expected spectrum (roughly what Griffin-Lim makes from a mel) "
        "scores ~6.1 dB. In a voiced frame both can approach 0."
    )
    periodic = (
        "- **Periodicity**: that autocorrelation peak, averaged over the original's voiced frames: how "
        "clearly the voice's harmonics come out (noise through the right envelope scores near 0). The "
        f"original scores {first['periodicity_original']:.2f} over the same frames."
    )
    f0 = (
        "- **F0 error**: median |pitch difference| in cents (100 = a semitone) over the frames voiced "
        "in both, the pitch being the peak's lag; **V/UV disagreement**: the share of active frames "
        "voiced in one signal and not the other. A pitch a few per cent off puts the higher harmonics "
        "between the original's, which the LSD of the 0.15-2 kHz bands sees."
    )
    sampling = (
        "- The vocoder samples its output, so its waveform never matches the original sample for sample; "
        "the metrics only look at magnitude spectra, where a good vocoder does match."
    )
    oracle = (
        "- **noise-oracle** is a yardstick, not a vocoder: the original audio itself, kept as it is "
        f"below {NOISE_ORACLE_SPLIT_HZ / 1000:g} kHz in its voiced frames, and everywhere else (unvoiced "
        "frames, and every frame above that, where the original is noise even when voiced: see the "
        "periodicity per band below) replaced by fresh noise of the original's own spectrum, smoothed "
        f"over ±{NOISE_ORACLE_SMOOTH_BINS * SPEC.sample_rate / SPEC.n_fft:.0f} Hz. It is what a vocoder "
        "would score that got every harmonic exactly right and sampled perfectly shaped noise: per-bin "
        "LSD gives a fresh draw of the right noise no credit for being the right noise."
    )
    bias = (
        "Band energy, output minus original (dB, active frames, mean over utterances): the sign "
        "of the distance, e.g. a vocoder too quiet where the voice is loud, or booming below it."
    )
    band = _band_index(SPEC.n_fft // 2 + 1)
    shares = ", ".join(f"{np.mean(band == b):.0%}" for b in range(len(BANDS_HZ) - 1))
    band_lsd = (
        "LSD per band (RMS dB difference over the band's bins, active frames, mean over utterances): "
        "where the distance comes from. A band can have the right energy above and still score badly "
        "here, e.g. when the original's harmonics come out as noise. The bands hold "
        f"{shares} of the bins."
    )
    band_periodic = (
        "Periodicity per band (voiced frames of the original: the normalised correlation of each "
        "band with itself one pitch period earlier, mean over utterances): what each band of the "
        "original is, harmonics (near 1) or noise (near 0), and how much of that each system keeps. "
        "Where the original is noise, even in voiced frames, a sampling vocoder can only answer with "
        "other noise, and the per-bin LSD there has the noise-against-noise floor of the voicing "
        "notes above (~7.9 dB), while a smooth spectrum scores ~6.1 dB."
    )
    lines = [
        "## Vocoding quality",
        "",
        intro,
        "",
        *([headline.table, "", headline.notes, ""] if headline and headline.table else []),
        format_table(summary),
        "",
        lsd,
        mcd,
        sampling,
        oracle,
        "",
        voicing,
        "",
        format_voicing_table(summary),
        "",
        split,
        periodic,
        f0,
        "",
        bias,
        "",
        format_bias_table(summary),
        "",
        band_lsd,
        "",
        format_band_lsd_table(summary),
        "",
        band_periodic,
        "",
        format_band_periodicity_table(summary),
        "",
        "Models:",
        models,
        "",
    ]
    if plots:
        lines += ["Spectrograms (original, then each system):", ""]
        lines += [
            f"![{Path(p).stem}]({Path(p).relative_to(path.parent).as_posix()})" for p in plots
        ]
        lines.append("")
    if samples:
        lines += [
            "Listen: "
            + ", ".join(
                f"[{Path(s).stem}]({Path(s).relative_to(path.parent).as_posix()})" for s in samples
            ),
            "",
        ]
    path.write_text("\n".join(lines))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME=DIR",
        help="compiled model to score (repeatable); default trained=compiled/wavernn-slt and "
        "untrained=compiled/wavernn-untrained",
    )
    parser.add_argument("--limit", type=int, default=8, help="held-out utterances to use (0 = all)")
    parser.add_argument(
        "--max-seconds", type=float, default=4.0, help="crop each utterance (0 = whole)"
    )
    parser.add_argument(
        "--split",
        default="test",
        help="corpus split to score: `test` for reporting, `train` for tuning export knobs",
    )
    parser.add_argument("--no-griffin-lim", action="store_true")
    parser.add_argument(
        "--no-lpc-noise", action="store_true", help="skip the LPC + white noise baseline"
    )
    parser.add_argument(
        "--no-noise-oracle",
        action="store_true",
        help="skip the yardstick of the original with its noise redrawn",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-perceptual", action="store_true", help="skip DNSMOS and ASR WER")
    parser.add_argument(
        "--json", type=Path, default=None, help="write the summary (and per-model info) here"
    )
    parser.add_argument(
        "--img-dir", type=Path, default=None, help="spectrogram PNGs (e.g. docs/img)"
    )
    parser.add_argument("--plots", type=int, default=2, help="utterances to plot")
    parser.add_argument(
        "--samples-dir",
        type=Path,
        default=None,
        help="WAVs of a few utterances (e.g. docs/samples)",
    )
    parser.add_argument("--samples", type=int, default=2, help="utterances to save as WAV")
    parser.add_argument(
        "--doc", type=Path, default=None, help="write the Markdown report here (docs/quality.md)"
    )


def _parse_models(specs: list[str] | None) -> dict[str, Path]:
    if not specs:
        return {
            "trained": Path("compiled/wavernn-slt"),
            "untrained": Path("compiled/wavernn-untrained"),
        }
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise EvalError(f"--model takes NAME=DIR, got {spec!r}")
        out[name] = Path(path)
    return out


def run(args: argparse.Namespace) -> int:
    from models.runtime import ModelLoadError, VocoderRuntime

    try:
        utterances = load_test_set(
            args.corpus, args.limit or None, args.max_seconds or None, args.split
        )
        systems: dict[str, object] = {}
        manifests: dict[str, dict] = {}
        for name, path in _parse_models(args.model).items():
            rt = VocoderRuntime.load(path)
            systems[name] = rt
            manifests[f"{name}: {path}"] = {**rt.manifest, "_isa": rt.isa}
    except (EvalError, ModelLoadError, OSError) as exc:
        print(f"sparrow eval: {exc}", file=sys.stderr)
        return 1
    summary, audio = evaluate(
        utterances,
        systems,
        griffin_lim_iters=None if args.no_griffin_lim else 32,
        lpc_noise=not args.no_lpc_noise,
        oracle=not args.no_noise_oracle,
        seed=args.seed,
    )
    head = perceptual.headline(audio, {u.id: u.text for u in utterances}, not args.no_perceptual)
    print(*filter(None, [head.table, format_table(summary)]), sep="\n")
    print(format_voicing_table(summary))
    print(format_bias_table(summary))
    print(format_band_lsd_table(summary))
    plots, samples = [], []
    for i, utt in enumerate(utterances):
        if args.img_dir and i < args.plots:
            p = args.img_dir / f"spectrogram-{utt.id}.png"
            save_spectrograms(p, audio[utt.id], f"{utt.id}: {utt.text}")
            plots.append(str(p))
        if args.samples_dir and i < args.samples:
            args.samples_dir.mkdir(parents=True, exist_ok=True)
            for name, y in audio[utt.id].items():
                p = args.samples_dir / f"{utt.id}-{name}.wav"
                sf.write(p, np.clip(y, -1, 1), SPEC.sample_rate, subtype="PCM_16")
                samples.append(str(p))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "summary": summary,
                    "perceptual": head.scores,
                    "utterances": [u.id for u in utterances],
                },
                indent=2,
            )
            + "\n"
        )
    if args.doc:
        write_quality_doc(args.doc, summary, args, plots, samples, manifests, head)
    return 0
