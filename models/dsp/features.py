"""The mel contract: how audio becomes the log-mel frames the vocoder is conditioned on.

Every producer of mels (the Festival front end, the training corpus, a user's own acoustic model)
and every consumer (training, the runtime's input check) uses this one module, so the numbers
below exist exactly once. The recipe matches librosa's defaults for `melspectrogram` with the
parameters in `MelSpec`, so mels made with librosa (Slaney scale and norm, power 1, natural log
with a 1e-5 floor) are interchangeable with ours.

Shapes: audio float32 [L] at 24 kHz -> log-mel float32 [L // hop + 1, 80].
Alignment: mel frame f conditions vocoder output samples [f * hop, (f + 1) * hop).

numpy and scipy only: the server imports this at run time.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

logger = logging.getLogger(__name__)


class MelInputError(ValueError):
    """A mel given to the vocoder (or to `validate_mel`) does not follow the contract."""

    def __init__(self, message: str, param: str = "mel") -> None:
        super().__init__(message)
        self.param = param  # the request field at fault, for the error body


@dataclass(frozen=True)
class MelSpec:
    # 24 kHz covers speech up to 12 kHz and is the vocoder's output rate.
    sample_rate: int = 24_000
    # 2048-point FFT (85 ms) gives fine bin spacing (11.7 Hz) for the low mel filters.
    n_fft: int = 2048
    # 50 ms periodic Hann window, zero-padded to n_fft (centred, as librosa does).
    win_length: int = 1200
    # 12.5 ms between frames; VocoderConfig.hop_length takes it (one kernel call per frame).
    hop_length: int = 300
    n_mels: int = 80
    # 40 Hz skips DC/rumble; 12 kHz is Nyquist at 24 kHz.
    fmin: float = 40.0
    fmax: float = 12_000.0
    # log(max(mel, floor)): 1e-5 is about -100 dB below full scale, below any real speech energy.
    log_floor: float = 1e-5

    def __post_init__(self) -> None:
        assert self.win_length <= self.n_fft
        assert 0.0 <= self.fmin < self.fmax <= self.sample_rate / 2
        assert self.log_floor > 0.0

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def frame_seconds(self) -> float:
        """Seconds of audio per mel frame (12.5 ms)."""
        return self.hop_length / self.sample_rate

    def frames_for(self, n_samples: int) -> int:
        """Frames `log_mel` returns for `n_samples` of audio (center=True padding)."""
        return n_samples // self.hop_length + 1


SPEC = MelSpec()

# Natural-log mels of audio in [-1, 1] lie in about [-11.5, 4]; the wide margin tolerates an
# acoustic model's over/undershoot but catches decibel mels (-100..0) and raw power (up to 1e3+).
MEL_VALUE_RANGE: tuple[float, float] = (-30.0, 20.0)

US_PER_SAMPLE_BUDGET = 40.0
"""Real time, per output sample: 1 / 24,000 s = 41.7 µs, rounded down to 40 µs so a core that
meets it keeps ~4% in hand for what runs around the kernel (conditioning, the chain, the socket).
Admission control, `sparrow bench` and the alerts all use this one figure."""


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney (Auditory Toolbox) mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    linear = hz / f_sp
    log_part = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log_part, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    linear = mel * f_sp
    log_part = min_log_hz * np.exp(logstep * (np.maximum(mel, min_log_mel) - min_log_mel))
    return np.where(mel >= min_log_mel, log_part, linear)


@functools.lru_cache(maxsize=4)
def _filterbank_cached(spec: MelSpec) -> np.ndarray:
    fft_freqs = np.linspace(0.0, spec.sample_rate / 2, spec.n_freqs)
    mel_points = np.linspace(_hz_to_mel(spec.fmin), _hz_to_mel(spec.fmax), spec.n_mels + 2)
    mel_freqs = _mel_to_hz(mel_points)  # [n_mels + 2] band edges in Hz
    fdiff = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]  # [n_mels + 2, n_freqs]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    # Slaney area normalisation: every triangle has unit area, so wide high bands are not louder.
    weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]
    fb = weights.astype(np.float32)
    fb.setflags(write=False)
    return fb


def mel_filterbank(spec: MelSpec = SPEC) -> np.ndarray:
    """Triangular Slaney-normalised mel filters, float32 [n_mels, n_fft // 2 + 1] (read-only)."""
    return _filterbank_cached(spec)


@functools.lru_cache(maxsize=4)
def hann_window(spec: MelSpec = SPEC) -> np.ndarray:
    """The analysis window, float64 [win_length] (read-only): periodic Hann, as
    scipy.signal.get_window("hann", N) / librosa."""
    n = np.arange(spec.win_length)
    win = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / spec.win_length)
    win.setflags(write=False)
    return win


@functools.lru_cache(maxsize=4)
def _window(spec: MelSpec) -> np.ndarray:
    # hann_window centred in n_fft.
    left = (spec.n_fft - spec.win_length) // 2
    padded = np.zeros(spec.n_fft, dtype=np.float64)
    padded[left : left + spec.win_length] = hann_window(spec)
    padded.setflags(write=False)
    return padded


def magnitude_spectrogram(audio: np.ndarray, spec: MelSpec = SPEC) -> np.ndarray:
    """|STFT| with center=True reflect padding: float64 [frames, n_fft // 2 + 1]."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"audio must be 1-D [samples], got shape {x.shape}")
    if x.size == 0:
        raise ValueError("audio is empty")
    pad = spec.n_fft // 2
    # Reflect padding needs at least pad + 1 samples; very short clips fall back to zero padding.
    mode = "reflect" if x.size > pad else "constant"
    x = np.pad(x, pad, mode=mode)
    n_frames = 1 + (x.size - spec.n_fft) // spec.hop_length
    frames = np.lib.stride_tricks.sliding_window_view(x, spec.n_fft)[:: spec.hop_length][:n_frames]
    return np.abs(np.fft.rfft(frames * _window(spec), axis=-1))


def log_mel(audio: np.ndarray, spec: MelSpec = SPEC) -> np.ndarray:
    """Log-mel of mono audio at `spec.sample_rate`.

    audio: float [L] in [-1, 1]. Returns float32 [L // hop + 1, n_mels] = log(max(mel, 1e-5)).
    """
    mag = magnitude_spectrogram(audio, spec)  # [frames, n_freqs]
    mel = mag @ mel_filterbank(spec).T.astype(np.float64)  # [frames, n_mels]
    out = np.log(np.maximum(mel, spec.log_floor)).astype(np.float32)
    assert out.shape == (spec.frames_for(np.asarray(audio).shape[0]), spec.n_mels)
    return out


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling (scipy's Kaiser FIR): float32 [L] -> float32 [~L * sr_out / sr_in]."""
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    x = np.asarray(audio, dtype=np.float32)
    if sr_in == sr_out:
        return x.copy()
    g = math.gcd(sr_in, sr_out)
    return resample_poly(x, sr_out // g, sr_in // g).astype(np.float32)


def validate_mel(mel: object, spec: MelSpec = SPEC) -> np.ndarray:
    """Check a conditioning input against the contract; return it as C-contiguous float32 [n, 80].

    Raises MelInputError naming the problem (shape, emptiness, NaN/inf, absurd range).
    """
    try:
        arr = np.asarray(mel, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise MelInputError(
            f"mel must be a numeric array of shape [n, {spec.n_mels}]: {exc}"
        ) from exc
    if arr.ndim != 2:
        raise MelInputError(
            f"mel must be 2-D [frames, {spec.n_mels}], got {arr.ndim}-D shape {tuple(arr.shape)}"
        )
    if arr.shape[1] != spec.n_mels:
        raise MelInputError(
            f"mel must have {spec.n_mels} bins per frame, got shape {tuple(arr.shape)}"
            + (" (did you pass [80, frames]? transpose it)" if arr.shape[0] == spec.n_mels else "")
        )
    if arr.shape[0] == 0:
        raise MelInputError("mel has no frames")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise MelInputError(f"mel contains {bad} non-finite values (NaN or inf)")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < MEL_VALUE_RANGE[0] or hi > MEL_VALUE_RANGE[1]:
        raise MelInputError(
            f"mel values span [{lo:.1f}, {hi:.1f}], outside [{MEL_VALUE_RANGE[0]:g}, "
            f"{MEL_VALUE_RANGE[1]:g}]: expected natural-log magnitude mels (floor log(1e-5) = "
            "-11.5), not decibels or power"
        )
    return np.ascontiguousarray(arr)
