"""models.dsp.pitch: F0 and voicing from the log-mel alone, and the sine source made from them."""

from __future__ import annotations

import numpy as np
import pytest

from models.dsp import pitch
from models.dsp.features import SPEC, log_mel


def vowel(f0: np.ndarray | float, seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    """15 harmonics of a (possibly gliding) pitch with a falling envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SPEC.sample_rate)
    f = np.broadcast_to(np.asarray(f0, np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f) / SPEC.sample_rate
    x = sum(0.2 / k * np.sin(k * phase) for k in range(1, 16)) + 0.002 * rng.normal(size=n)
    return x.astype(np.float32)


@pytest.mark.parametrize("f0", [110.0, 165.0, 220.0, 310.0])
def test_pitch_of_a_vowel_is_found_from_its_mel(f0: float) -> None:
    est, voicing = pitch.mel_pitch(log_mel(vowel(f0)))
    middle = slice(3, -3)  # away from the clip's edges
    cents = 1200 * np.log2(est[middle] / f0)
    assert np.median(np.abs(cents)) < 15
    # voiced; fully from 165 Hz up (at 110 Hz the comb is unresolved above ~1 kHz: weaker match)
    assert voicing[middle].min() > (0.99 if f0 >= 165 else 0.5)


def test_a_glide_is_followed() -> None:
    n = int(0.8 * SPEC.sample_rate)
    glide = np.linspace(140.0, 240.0, n)
    est, _ = pitch.mel_pitch(log_mel(vowel(glide, 0.8)))
    truth = glide[np.minimum(np.arange(est.size) * SPEC.hop_length, n - 1)]
    cents = 1200 * np.log2(est[3:-3] / truth[3:-3])
    assert np.median(np.abs(cents)) < 20
    assert np.all(np.diff(est[3:-3]) > -5)  # rising, as the tone does


def test_noise_and_silence_are_unvoiced() -> None:
    rng = np.random.default_rng(1)
    _, voicing = pitch.mel_pitch(log_mel((0.1 * rng.normal(size=48_000)).astype(np.float32)))
    # a noise frame's random ripple now and then matches a comb a little, never as a vowel does
    assert np.mean(voicing > 0) < 0.15 and voicing.max() < 0.8
    f0, voicing = pitch.mel_pitch(log_mel(np.zeros(6000, np.float32)))
    assert np.all(np.isfinite(f0)) and voicing.max() == 0.0


def test_bad_mel_is_rejected() -> None:
    with pytest.raises(ValueError, match="log-mel"):
        pitch.mel_pitch(np.zeros((4, 10), np.float32))


def test_source_is_a_sine_at_f0_with_the_voicing_as_amplitude() -> None:
    hop, sr = SPEC.hop_length, SPEC.sample_rate
    f0 = np.array([200.0, 200.0, 150.0, 150.0])
    voicing = np.array([1.0, 0.5, 0.0, 1.0])
    src, end = pitch.source(f0, voicing, hop, sr)
    assert src.shape == (4 * hop, 2) and src.dtype == np.float32
    amp = np.hypot(src[:, 0], src[:, 1])
    np.testing.assert_allclose(amp, np.repeat(voicing, hop), atol=1e-6)
    # frame 0: 200 Hz from phase 0, so sample k is sin(2 pi 200 k / sr), k = 1..hop
    k = np.arange(1, hop + 1)
    np.testing.assert_allclose(src[:hop, 0], np.sin(2 * np.pi * 200 * k / sr), atol=1e-6)
    # the phase runs on through an unvoiced frame: frame 3 continues frame 2's sine
    total = 2 * np.pi * (2 * hop * 200 + 2 * hop * 150) / sr
    assert end == pytest.approx(total % (2 * np.pi))


def test_frame_by_frame_source_is_the_whole_source_bit_for_bit() -> None:
    rng = np.random.default_rng(2)
    f0, voicing = rng.uniform(100, 400, 9), rng.uniform(0, 1, 9)
    whole, end = pitch.source(f0, voicing, SPEC.hop_length, SPEC.sample_rate)
    parts, phase = [], 0.0
    for f in range(9):
        part, phase = pitch.source(
            f0[f : f + 1], voicing[f : f + 1], SPEC.hop_length, SPEC.sample_rate, phase
        )
        parts.append(part)
    assert np.array_equal(np.concatenate(parts), whole) and phase == end
    starts = pitch.frame_phases(f0, SPEC.hop_length, SPEC.sample_rate)
    # a crop from frame 4 on, started at its frame phase, is the same stretch
    crop, _ = pitch.source(f0[4:], voicing[4:], SPEC.hop_length, SPEC.sample_rate, starts[4])
    assert np.array_equal(crop, whole[4 * SPEC.hop_length :])


@pytest.mark.parametrize("theta", [0.0, 1.0, -2.5])
def test_locked_offsets_find_the_phase_of_a_recording(theta: float) -> None:
    """Training's source is shifted onto the recording's fundamental: a vowel whose phase runs
    theta ahead of the source's gives offsets of theta, and the shifted source is in phase."""
    hop, sr = SPEC.hop_length, SPEC.sample_rate
    f0 = 180.0 + 20.0 * np.sin(np.arange(24) / 4)  # a moving pitch
    phi, _ = pitch.sample_phases(f0, hop, sr)
    x = sum(0.2 / k * np.sin(k * (phi + theta)) for k in range(1, 16))
    offsets = pitch.locked_offsets(x, f0, hop, sr)
    err = np.angle(np.exp(1j * (offsets - theta)))[2:-2]
    assert np.abs(err).max() < 0.15
    locked, _ = pitch.source(f0, np.ones(24), hop, sr, offsets=offsets)
    assert (
        np.corrcoef(locked[2 * hop : -2 * hop, 0], np.sin(phi + theta)[2 * hop : -2 * hop])[0, 1]
        > 0.99
    )
