"""The systems `sparrow eval` compares besides our vocoder: Griffin-Lim, the noise oracle and the
LPC + noise baseline, and the runtime run over a whole mel."""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy.ndimage import uniform_filter1d

from models.dsp.features import SPEC, mel_filterbank
from models.evaluation.metrics import VOICED_THRESHOLD, pitch_track

logger = logging.getLogger(__name__)


# --- systems --------------------------------------------------------------------------------------


LIBROSA_STFT = {
    "n_fft": SPEC.n_fft,
    "hop_length": SPEC.hop_length,
    "win_length": SPEC.win_length,
    "window": "hann",  # periodic, as models.dsp.features' window
    "center": True,
}
"""models.dsp.features' STFT in librosa's spelling, for the systems that need its phase too."""


def griffin_lim(mel: np.ndarray, n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """Log-mel [N, 80] -> float32 audio [(N - 1) * hop]: NNLS mel inversion + Griffin-Lim
    (librosa)."""
    import librosa  # optional: part of the `train` extra

    magnitude_mel = np.exp(mel.astype(np.float64)).T  # [80, N]
    linear = librosa.util.nnls(mel_filterbank().astype(np.float64), magnitude_mel)  # [bins, N]
    audio = librosa.griffinlim(linear, n_iter=n_iter, random_state=seed, **LIBROSA_STFT)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


NOISE_ORACLE_SPLIT_HZ = (
    4000.0  # the original is noise above this even when voiced (band_periodicity)
)
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
    """Whole-mel vocoding through a VocoderStream (the server's path, redraws included): float32 [N
    * hop]."""
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
