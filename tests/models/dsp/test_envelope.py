"""Envelope correction: moves the output's log-mel to the target, keeps its fine structure,
streams with a bounded delay and the same result in any chunks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import butter, lfilter, sosfilt, sosfiltfilt

from models.dsp.envelope import (
    DELAY_SAMPLES,
    HOP,
    WIN,
    EnvelopeCorrector,
    OnsetCheck,
    correct,
)
from models.dsp.features import SPEC, log_mel, magnitude_spectrogram

SR = SPEC.sample_rate


def _noise(n: int, seed: int) -> np.ndarray:
    return (0.05 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _harmonics(n: int, f0: float, tilt_db_per_khz: float) -> np.ndarray:
    t = np.arange(n) / SR
    ks = np.arange(1, int(11_000 / f0))
    amps = 10 ** (tilt_db_per_khz * ks * f0 / 1000 / 20)
    x = sum(a * np.sin(2 * np.pi * k * f0 * t) for k, a in zip(ks, amps))
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


def _mel_error(y: np.ndarray, target: np.ndarray) -> float:
    """Mean |log-mel difference| (nats) over the frames away from the ends."""
    m = log_mel(y)[: len(target)]
    return float(np.abs(m - target)[4:-4].mean())


def test_moves_the_log_mel_to_the_target() -> None:
    # White noise asked to sound like lowpassed, 6 dB louder noise: each pass gets closer.
    x = _noise(40 * HOP, 0)
    shaped = 2.0 * lfilter([0.5, 0.5], [1.0, -0.6], _noise(40 * HOP, 1))
    target = log_mel(shaped.astype(np.float32))
    before = _mel_error(x, target)
    one, two = (_mel_error(correct(x, target, p, 1.5), target) for p in (1, 2))
    assert before > 0.8
    assert one < 0.45 * before and two < 0.7 * one


def test_keeps_the_fine_structure() -> None:
    # Harmonics of 200 Hz with the wrong tilt: the envelope moves, the harmonics stay harmonics.
    n = 40 * HOP
    x = _harmonics(n, 200.0, -1.0)
    target = log_mel(_harmonics(n, 200.0, -4.0))
    y = correct(x, target, 2, 1.5)
    assert _mel_error(y, target) < 0.5 * _mel_error(x, target)
    spec = np.abs(np.fft.rfft(y[WIN:-WIN] * np.hanning(n - 2 * WIN)))
    freqs = np.fft.rfftfreq(n - 2 * WIN, 1 / SR)
    for k in (1, 3, 5):  # the peak near each harmonic sits on it, 20 dB over its surroundings
        near = (freqs > k * 200 - 100) & (freqs < k * 200 + 100)
        peak = freqs[near][np.argmax(spec[near])]
        between = spec[(freqs > k * 200 + 60) & (freqs < k * 200 + 140)].max()
        assert abs(peak - k * 200) < 3 and spec[near].max() > 10 * between


def _peak_over_floor_db(y: np.ndarray, freq: float) -> float:
    """How far the spectrum's peak near `freq` stands over the valley just above it (dB)."""
    n = y.size - 2 * WIN
    spec = np.abs(np.fft.rfft(y[WIN:-WIN] * np.hanning(n)))
    freqs = np.fft.rfftfreq(n, 1 / SR)
    near = (freqs > freq - 100) & (freqs < freq + 100)
    valley = spec[(freqs > freq + 60) & (freqs < freq + 140)].max()
    return float(20 * np.log10(spec[near].max() / valley))


def _bin_scatter_db(y: np.ndarray, lo_hz: float, hi_hz: float) -> float:
    """Mean over frames of the std (dB) of the STFT magnitudes across the bins of a band: how
    much the fine structure scatters around the envelope."""
    freqs = np.arange(SPEC.n_fft // 2 + 1) * SR / SPEC.n_fft
    band = (freqs > lo_hz) & (freqs < hi_hz)
    spec_db = 20 * np.log10(magnitude_spectrogram(y)[6:-6, band] + 1e-9)
    return float(spec_db.std(axis=1).mean())


def _band_power_db(y: np.ndarray, lo_hz: float, hi_hz: float) -> float:
    freqs = np.arange(SPEC.n_fft // 2 + 1) * SR / SPEC.n_fft
    band = (freqs > lo_hz) & (freqs < hi_hz)
    return float(10 * np.log10(np.mean(magnitude_spectrogram(y)[6:-6, band] ** 2)))


def test_smoothing_evens_the_noise_above_its_frequency_and_keeps_the_mel() -> None:
    # White noise asked for its own mel: the band gains stay ~0; the smoothing takes the
    # per-bin scatter above 4 kHz (log-Rayleigh, ~5.6 dB) down, below 4 kHz it leaves it.
    x = _noise(60 * HOP, 7)
    target = log_mel(x)
    plain = correct(x, target, 2, 1.5)
    half, full = (correct(x, target, 2, 1.5, s, 4000.0) for s in (0.5, 1.0))
    above = [_bin_scatter_db(y, 4500, 11_500) for y in (plain, half, full)]
    below = [_bin_scatter_db(y, 500, 3500) for y in (plain, half, full)]
    assert above[0] > 5.0 and above[1] < 0.85 * above[0] and above[2] < 0.75 * above[0]
    assert above[2] < above[1]
    assert below[1] == pytest.approx(below[0], rel=0.01) and below[2] == pytest.approx(
        below[0], rel=0.01
    )
    assert _mel_error(full, target) < 0.05  # the bands' levels stay where the mel asks
    # and the noise keeps its power: a smooth spectrum at the bands' average magnitude alone
    # would be ~1 dB quieter than the noise it replaces
    assert abs(_band_power_db(full, 4500, 11_500) - _band_power_db(plain, 4500, 11_500)) < 0.6


def test_smoothing_leaves_the_harmonics_below_its_frequency() -> None:
    n = 60 * HOP
    x = _harmonics(n, 200.0, -1.0) + 0.01 * _noise(n, 8)
    target = log_mel(x)
    plain, smoothed = correct(x, target, 2, 1.5), correct(x, target, 2, 1.5, 1.0, 4000.0)
    for f in (200.0, 1000.0, 2000.0, 3600.0):
        assert _peak_over_floor_db(smoothed, f) == pytest.approx(
            _peak_over_floor_db(plain, f), abs=1.0
        )
    for f in (5000.0, 6000.0, 8000.0):  # above it, the harmonics are evened out towards the floor
        assert _peak_over_floor_db(smoothed, f) < _peak_over_floor_db(plain, f) - 10.0


def test_smoothing_draws_no_noise_ahead_of_an_onset() -> None:
    # Steady noise below 3 kHz, then a burst of noise above 5 kHz (a sibilant's onset), 34 dB over
    # what leaked before it: a gain varying across the bins would spread the burst over its
    # window, ahead of the onset; the smoothing fades out there and leaves the silence before it.
    n, onset = 60 * HOP, 20 * HOP + 150
    x = 0.5 * sosfilt(butter(8, 3000, btype="low", fs=SR, output="sos"), _noise(n, 9))
    burst = 4.0 * sosfilt(butter(8, 5000, btype="high", fs=SR, output="sos"), _noise(n, 10))
    burst[:onset] = 0.0
    x = (x + burst).astype(np.float32)
    target = log_mel(x)
    high = butter(6, [4500, 11_500], btype="band", fs=SR, output="sos")

    def before_over_after_db(y: np.ndarray) -> float:  # 15 ms either side of the onset
        h = sosfiltfilt(high, y.astype(np.float64))
        k = int(0.015 * SR)
        return float(
            10 * np.log10(np.mean(h[onset - k : onset] ** 2) / np.mean(h[onset : onset + k] ** 2))
        )

    assert before_over_after_db(x) < -30.0
    smoothed = correct(x, target, 3, 1.5, 1.0, 4000.0)
    assert before_over_after_db(smoothed) < before_over_after_db(x) + 4.0
    # and away from the onset the burst is still smoothed
    late = slice(onset + 4 * HOP, n)
    assert _bin_scatter_db(smoothed[late], 5500, 11_500) < 0.85 * _bin_scatter_db(
        x[late], 5500, 11_500
    )


def test_the_correction_is_clipped() -> None:
    x = _noise(30 * HOP, 2)
    target = log_mel(x) + 10.0  # asks for e^10 (87 dB) more
    y = correct(x, target, 1, 0.5)
    gain = np.sqrt(np.mean(y[WIN:-WIN] ** 2) / np.mean(x[WIN:-WIN] ** 2))
    assert gain == pytest.approx(np.exp(0.5), rel=0.05)


def test_frames_past_the_mel_pass_unchanged() -> None:
    x = _noise(20 * HOP, 3)
    c = EnvelopeCorrector(lambda k: None, 1.5)
    y = np.concatenate([c.push(x[:1000]), c.push(x[1000:]), c.finish()])
    np.testing.assert_allclose(y, x, atol=1e-7)
    # and with a target for the first frames only, the rest is untouched
    target = log_mel(x)[:5] + 1.0
    y = correct(x, target, 1, 1.5)
    np.testing.assert_allclose(y[8 * HOP :], x[8 * HOP :], atol=1e-7)
    assert not np.allclose(y[:HOP], x[:HOP])


@pytest.mark.parametrize("smoothing", [0.0, 1.0])
@pytest.mark.parametrize("chunks", [[1] * 7, [299, 301, 1200], [5000], [0, 77, 3000, 13]])
def test_streaming_in_any_chunks_equals_whole(chunks: list[int], smoothing: float) -> None:
    n = 20 * HOP + 123
    x = _harmonics(n, 180.0, -2.0) + _noise(n, 4)
    target = log_mel(_harmonics(n, 180.0, -5.0))
    whole = correct(x, target, 1, 1.5, smoothing, 3000.0)
    c = EnvelopeCorrector(lambda k: target[k] if k < len(target) else None, 1.5, smoothing, 3000.0)
    parts, at = [], 0
    bounds = np.cumsum(chunks + [n])
    for end in bounds:
        end = min(int(end), n)
        parts.append(c.push(x[at:end]))
        at = end
        emitted = sum(p.size for p in parts)
        # the delay is bounded: everything more than DELAY_SAMPLES old is out
        assert at - DELAY_SAMPLES <= emitted <= at
    parts.append(c.finish())
    y = np.concatenate(parts)
    assert y.shape == (n,) and y.dtype == np.float32
    np.testing.assert_array_equal(y, whole)
    with pytest.raises(RuntimeError):
        c.push(x[:10])


def test_empty_and_short_input() -> None:
    assert correct(np.zeros(0, np.float32), np.zeros((1, 80)), 1, 1.5).shape == (0,)
    x = _noise(100, 5)
    y = correct(x, log_mel(x) + 0.3, 1, 1.5)
    assert y.shape == (100,) and np.all(np.isfinite(y)) and np.abs(y).max() > np.abs(x).max()


def test_passes_sharing_one_onset_check_match_passes_with_their_own() -> None:
    """Three passes streamed in uneven pieces with one shared onset check (as the synthesis
    chain runs them) give the same samples as passes that each check on their own, over a long
    stream (the buffers are compacted several times); the shared check keeps nothing once every
    pass has read a frame's steadiness."""
    n = 120 * HOP + 57
    x = _harmonics(n, 150.0, -2.0) + _noise(n, 6)
    x[40 * HOP : 45 * HOP] = 0.0  # an onset and an offset
    target = log_mel(_harmonics(n, 150.0, -5.0))
    target[60:64, 40:] += 2.5  # a burst above smoothing_hz: the smoothing fades around it

    def target_of(k: int) -> np.ndarray | None:
        return target[k] if k < len(target) else None

    shared = OnsetCheck(target_of, 3000.0, users=3)
    runs = {
        "shared": [EnvelopeCorrector(target_of, 1.5, 1.0, 3000.0, shared) for _ in range(3)],
        "own": [EnvelopeCorrector(target_of, 1.5, 1.0, 3000.0) for _ in range(3)],
    }
    out = {}
    for name, passes in runs.items():
        parts, at = [], 0
        for size in [300, 17, 2000, 300, 911] * 20:
            y = x[at : at + size]
            at += y.size
            for corrector in passes:
                y = corrector.push(y)
            parts.append(y)
        y = np.zeros(0, np.float32)
        for corrector in passes:
            y = np.concatenate([corrector.push(y), corrector.finish()])
        out[name] = np.concatenate([*parts, y])
    assert out["shared"].shape == (n,)
    assert out["shared"].tobytes() == out["own"].tobytes()
    assert out["own"].tobytes() == correct(x, target, 3, 1.5, 1.0, 3000.0).tobytes()
    assert not shared._known  # every frame's steadiness was read by all three passes


@pytest.mark.parametrize("smoothing_hz", [1000.0, 4000.0, 11_000.0, 20_000.0])
def test_onset_level_is_the_log_of_the_summed_exp_above_smoothing_hz(smoothing_hz: float) -> None:
    """OnsetCheck.level, bit for bit, is its formula on the bands whose filters peak at or above
    smoothing_hz (none above the last: level 0), for float32 and float64 targets."""
    from models.dsp.envelope import _tables

    high = _tables().centre_hz >= smoothing_hz
    check = OnsetCheck(lambda k: None, smoothing_hz)
    rng = np.random.default_rng(11)
    for goal in rng.normal(-4.0, 3.0, size=(50, high.size)):
        for row in (goal, goal.astype(np.float32)):
            bands = np.asarray(row, dtype=np.float64)[high]
            want = float(np.log(np.exp(bands).sum())) if bands.size else 0.0
            assert check.level(row) == want
    assert high.any() == (smoothing_hz < 20_000.0)


def test_a_long_stream_reuses_its_buffers() -> None:
    """A stream pushed a frame at a time keeps the buffers it started with (compacted when
    full, not grown), and returns a frame's samples a push once the delay is filled."""
    n = 200 * HOP
    x = _noise(n, 12)
    target = log_mel(_harmonics(n, 170.0, -3.0))
    c = EnvelopeCorrector(lambda k: target[k] if k < len(target) else None, 1.5, 1.0)
    buffers = (c._x, c._acc)
    sizes = [c.push(x[at : at + HOP]).size for at in range(0, n, HOP)]
    assert c._x is buffers[0] and c._acc is buffers[1]
    assert sizes[DELAY_SAMPLES // HOP + 1 :] == [HOP] * (len(sizes) - DELAY_SAMPLES // HOP - 1)
    assert sum(sizes) + c.finish().size == n
