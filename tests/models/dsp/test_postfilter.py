"""The pitch postfilter: identity when off, harmonics kept, noise between them taken out,
streams."""

from __future__ import annotations

import numpy as np
import pytest

from models.dsp.postfilter import POSTFILTER_DELAY, PitchPostfilter

RATE, HOP = 24_000, 300


def voiced(frames: int, f0: float, noise: float, seed: int = 0) -> np.ndarray:
    """Ten harmonics of f0 plus white noise."""
    t = np.arange(frames * HOP) / RATE
    tone = sum(0.05 * np.sin(2 * np.pi * k * f0 * t + k) for k in range(1, 11))
    return (tone + np.random.default_rng(seed).normal(0, noise, t.size)).astype(np.float32)


def test_off_or_unvoiced_passes_the_signal_unchanged() -> None:
    x = voiced(8, 200.0, 0.02)
    f0 = np.full(8, 200.0)
    assert np.array_equal(PitchPostfilter(0.0, RATE, HOP)(x, f0, np.ones(8)), x)
    assert np.array_equal(PitchPostfilter(0.5, RATE, HOP)(x, f0, np.zeros(8)), x)


def test_keeps_the_harmonics_and_takes_out_the_noise_between_them() -> None:
    f0 = 187.3  # a fractional period (128.1 samples): the delay interpolates
    frames = 80
    x = voiced(frames, f0, 0.02)
    y = PitchPostfilter(0.5, RATE, HOP)(x, np.full(frames, f0), np.ones(frames))
    skip = 2 * HOP  # past the filter's start, where the history is still zeros
    spec_x, spec_y = (
        np.abs(np.fft.rfft(s[skip:] * np.hanning(s.size - skip))) ** 2 for s in (x, y)
    )
    hz = np.fft.rfftfreq(x.size - skip, 1 / RATE)

    def power(spec: np.ndarray, at: np.ndarray) -> float:
        return float(sum(spec[np.abs(hz - f) < 10].sum() for f in at))

    harmonics = f0 * np.arange(1, 11)
    between = harmonics + f0 / 2
    kept = 10 * np.log10(power(spec_y, harmonics) / power(spec_x, harmonics))
    removed = 10 * np.log10(power(spec_y, between) / power(spec_x, between))
    assert abs(kept) < 0.5  # the harmonics add in phase
    assert removed < -6  # midway (1 - g) / (1 + g) = 1/3 in amplitude: -9.5 dB


def test_streams_frame_by_frame_as_a_whole() -> None:
    rng = np.random.default_rng(1)
    frames = 12
    x = rng.uniform(-1, 1, frames * HOP).astype(np.float32)
    f0, v = rng.uniform(100, 400, frames), rng.uniform(0, 1, frames)
    whole = PitchPostfilter(0.35, RATE, HOP)(x, f0, v)
    pf = PitchPostfilter(0.35, RATE, HOP)
    parts, at = [], 0
    for k in (1, 3, 1, 5, 2):
        parts.append(pf(x[at * HOP : (at + k) * HOP], f0[at : at + k], v[at : at + k]))
        at += k
    assert np.array_equal(np.concatenate(parts), whole)
    assert whole.dtype == np.float32 and np.abs(whole).max() <= 1.0  # a convex combination


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_strength_outside_0_1_is_refused(strength: float) -> None:
    with pytest.raises(ValueError, match="strength"):
        PitchPostfilter(strength, RATE, HOP)


def test_with_a_cutoff_it_combs_below_it_and_passes_the_band_above_late_by_its_delay() -> None:
    f0, frames = 187.3, 80
    x = voiced(frames, f0, 0.02)  # harmonics up to 1.9 kHz, white noise everywhere
    pf = PitchPostfilter(0.5, RATE, HOP, cutoff_hz=4000.0)
    y = pf(x, np.full(frames, f0), np.ones(frames))
    d = pf.delay
    assert d == POSTFILTER_DELAY > 0
    late = np.concatenate([np.zeros(d), x[:-d]])  # x as the output carries it
    skip = 2 * HOP
    spec = {
        name: np.abs(np.fft.rfft(s[skip:] * np.hanning(s.size - skip))) ** 2
        for name, s in (("x", late), ("y", y), ("c", y - late))
    }
    hz = np.fft.rfftfreq(x.size - skip, 1 / RATE)

    def power(s: str, at: np.ndarray) -> float:
        return float(sum(spec[s][np.abs(hz - f) < 10].sum() for f in at))

    harmonics = f0 * np.arange(1, 11)
    between = harmonics + f0 / 2
    assert abs(10 * np.log10(power("y", harmonics) / power("x", harmonics))) < 0.5
    assert 10 * np.log10(power("y", between) / power("x", between)) < -6
    # what the filter adds or takes away above 8 kHz is > 25 dB below the noise already there
    high = hz > 8000
    assert 10 * np.log10(spec["c"][high].sum() / spec["x"][high].sum()) < -25


def test_with_a_cutoff_unvoiced_frames_pass_late_and_it_streams_as_a_whole() -> None:
    rng = np.random.default_rng(2)
    frames = 12
    x = rng.uniform(-1, 1, frames * HOP).astype(np.float32)
    d = POSTFILTER_DELAY
    quiet = PitchPostfilter(0.5, RATE, HOP, cutoff_hz=4000.0)(
        x, np.full(frames, 200.0), np.zeros(frames)
    )
    assert np.array_equal(quiet[d:], x[:-d]) and not quiet[:d].any()
    f0, v = rng.uniform(100, 400, frames), rng.uniform(0, 1, frames)
    whole = PitchPostfilter(0.35, RATE, HOP, cutoff_hz=4000.0)(x, f0, v)
    pf = PitchPostfilter(0.35, RATE, HOP, cutoff_hz=4000.0)
    parts, at = [], 0
    for k in (1, 3, 1, 5, 2):
        parts.append(pf(x[at * HOP : (at + k) * HOP], f0[at : at + k], v[at : at + k]))
        at += k
    assert np.array_equal(np.concatenate(parts), whole)
    assert whole.dtype == np.float32 and np.abs(whole).max() <= 1.0
