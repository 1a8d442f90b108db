"""The mel contract: compared against librosa (what users will reach for) and by property."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from models.dsp import features
from models.dsp.features import SPEC, MelInputError, log_mel, mel_filterbank, resample, validate_mel
from models.vocoder.config import VocoderConfig


def _sine(freq: float, seconds: float = 0.5, sr: int = SPEC.sample_rate, amp: float = 0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_contract_numbers_match_the_vocoder() -> None:
    cfg = VocoderConfig()
    assert SPEC.hop_length == cfg.hop_length == 300
    assert SPEC.sample_rate == cfg.sample_rate == 24_000
    assert SPEC.n_mels == cfg.n_mels == 80
    assert (SPEC.n_fft, SPEC.win_length, SPEC.fmin, SPEC.fmax) == (2048, 1200, 40.0, 12_000.0)


def test_filterbank_matches_librosa_slaney() -> None:
    ours = mel_filterbank()
    ref = librosa.filters.mel(sr=24_000, n_fft=2048, n_mels=80, fmin=40.0, fmax=12_000.0)
    assert ours.shape == (80, 1025) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-9)


def test_filter_peaks_are_increasing() -> None:
    peaks = mel_filterbank().argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0)
    assert peaks[-1] > peaks[0]


def test_log_mel_matches_librosa() -> None:
    rng = np.random.default_rng(0)
    # Noise plus a chirp: energy in every band, so the comparison covers all 80 bins.
    t = np.arange(36_000) / 24_000
    audio = 0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * (100 + 3000 * t) * t)
    audio = audio.astype(np.float32)
    ours = log_mel(audio)
    mag = librosa.feature.melspectrogram(
        y=audio,
        sr=24_000,
        n_fft=2048,
        hop_length=300,
        win_length=1200,
        window="hann",
        center=True,
        pad_mode="reflect",
        power=1.0,
        n_mels=80,
        fmin=40.0,
        fmax=12_000.0,
    )
    ref = np.log(np.maximum(mag, 1e-5)).T
    assert ours.shape == ref.shape == (36_000 // 300 + 1, 80)
    np.testing.assert_allclose(ours, ref, atol=2e-4)


@pytest.mark.parametrize("n", [1, 299, 300, 301, 1023, 1025, 24_000, 24_123])
def test_frame_count_and_dtype(n: int) -> None:
    mel = log_mel(np.zeros(n, dtype=np.float32) + 0.01)
    assert mel.shape == (n // 300 + 1, 80) == (SPEC.frames_for(n), 80)
    assert mel.dtype == np.float32
    assert np.all(np.isfinite(mel))


def test_silence_is_the_log_floor() -> None:
    mel = log_mel(np.zeros(3000, dtype=np.float32))
    np.testing.assert_allclose(mel, np.log(1e-5), rtol=1e-6)


@pytest.mark.parametrize("freq", [200.0, 1000.0, 3000.0, 8000.0])
def test_sine_peaks_in_the_band_containing_it(freq: float) -> None:
    mel = log_mel(_sine(freq))
    loudest = int(np.median(mel[5:-5].argmax(axis=1)))
    # The loudest band is the filter with the largest weight at that frequency.
    bin_index = round(freq / (SPEC.sample_rate / SPEC.n_fft))
    expected = int(mel_filterbank()[:, bin_index].argmax())
    assert abs(loudest - expected) <= 1


def test_louder_audio_gives_larger_log_mel() -> None:
    quiet, loud = log_mel(_sine(440.0, amp=0.1)), log_mel(_sine(440.0, amp=0.4))
    diff = (loud - quiet)[5:-5].max(axis=1)
    np.testing.assert_allclose(diff, np.log(4.0), atol=1e-3)  # magnitude, natural log


def test_log_mel_rejects_bad_audio() -> None:
    with pytest.raises(ValueError, match="1-D"):
        log_mel(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(ValueError, match="empty"):
        log_mel(np.zeros(0, dtype=np.float32))


def test_resample_32k_to_24k_keeps_length_and_pitch() -> None:
    x = _sine(1000.0, seconds=1.0, sr=32_000)
    y = resample(x, 32_000, 24_000)
    assert y.dtype == np.float32 and y.shape == (24_000,)
    spectrum = np.abs(np.fft.rfft(y[2000:-2000]))
    peak_hz = spectrum.argmax() * 24_000 / (y.size - 4000)
    assert abs(peak_hz - 1000.0) < 2.0
    assert abs(np.abs(y[2000:-2000]).max() - 0.5) < 0.01
    with pytest.raises(ValueError):
        resample(x, 0, 24_000)


def test_validate_mel_accepts_the_contract() -> None:
    mel = log_mel(_sine(500.0)).astype(np.float64)
    out = validate_mel(mel)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == mel.shape
    assert validate_mel(mel.tolist()).shape == mel.shape  # lists from JSON are fine too


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros(80), "2-D"),
        (np.zeros((2, 3, 80)), "2-D"),
        (np.zeros((10, 81)), "80 bins"),
        (np.zeros((80, 10)), "transpose"),
        (np.zeros((0, 80)), "no frames"),
        (np.full((4, 80), np.nan), "non-finite"),
        (np.full((4, 80), np.inf), "non-finite"),
        (np.full((4, 80), -80.0), "decibels"),
        ([["a"] * 80], "numeric"),
    ],
)
def test_validate_mel_rejects_with_a_clear_message(bad: object, message: str) -> None:
    with pytest.raises(MelInputError, match=message):
        validate_mel(bad)
    assert issubclass(MelInputError, ValueError)


def test_filterbank_is_cached_and_read_only() -> None:
    fb = features.mel_filterbank()
    assert fb is features.mel_filterbank()
    with pytest.raises(ValueError):
        fb[0, 0] = 1.0
