"""`sparrow eval` metrics and report, on a tiny real compiled model (no torch needed)."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.dsp.features import SPEC, log_mel
from models.evaluation import cli, evaluate, metrics, systems

pytestmark = pytest.mark.slow


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    """Harmonics with a pitch glide and an amplitude envelope: a rich, non-flat spectrum."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SPEC.sample_rate)
    t = np.arange(n) / SPEC.sample_rate
    phase = 2 * np.pi * np.cumsum(110 + 50 * rng.random() + 60 * t) / SPEC.sample_rate
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    y = env * sum(0.25 / k * np.sin(k * phase) for k in range(1, 8)) + 0.002 * rng.normal(size=n)
    return y.astype(np.float32)


def test_metrics_are_zero_for_identical_signals() -> None:
    y = _speechlike(0.5, 0)
    assert metrics.log_spectral_distance(y, y) == 0.0
    assert metrics.mel_cepstral_distortion(y, y) == 0.0


def test_metrics_grow_with_the_difference() -> None:
    y = _speechlike(0.5, 0)
    rng = np.random.default_rng(1)
    small = y + 0.002 * rng.normal(size=y.size).astype(np.float32)
    big = y + 0.05 * rng.normal(size=y.size).astype(np.float32)
    lsd_small, lsd_big = (
        metrics.log_spectral_distance(y, small),
        metrics.log_spectral_distance(y, big),
    )
    mcd_small, mcd_big = (
        metrics.mel_cepstral_distortion(y, small),
        metrics.mel_cepstral_distortion(y, big),
    )
    assert 0 < lsd_small < lsd_big
    assert 0 < mcd_small < mcd_big
    noise = 0.1 * rng.normal(size=y.size).astype(np.float32)  # flat spectrum: no envelope in common
    assert metrics.mel_cepstral_distortion(y, noise) > mcd_big


def test_half_gain_is_six_db_of_lsd_and_no_mcd() -> None:
    """A pure gain moves every bin by 20 log10(2) dB; MCD leaves out c_0 (loudness)."""
    y = _speechlike(0.5, 2)
    assert metrics.log_spectral_distance(y, 0.5 * y) == pytest.approx(20 * np.log10(2), abs=0.05)
    assert metrics.mel_cepstral_distortion(y, 0.5 * y) < 0.05


def test_band_bias_has_the_sign_and_place_of_the_difference() -> None:
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(3)
    x = 0.1 * rng.normal(size=24_000)
    assert np.allclose(metrics.band_bias_db(x, x), 0.0)
    assert np.allclose(metrics.band_bias_db(x, 0.5 * x), -6.02, atol=0.01)  # every band 6 dB down
    # Cut everything above 2 kHz: the top bands fall far, the bands below stay put.
    low = sosfilt(butter(8, 1800, "lowpass", fs=SPEC.sample_rate, output="sos"), x)
    bias = metrics.band_bias_db(x, low)
    top = [i for i, lo in enumerate(metrics.BANDS_HZ[:-1]) if lo >= 2000]
    assert all(bias[i] < -20 for i in top)
    assert np.all(np.abs(bias[: metrics.BANDS_HZ.index(1000)]) < 0.5)


def test_band_lsd_finds_harmonics_turned_into_noise() -> None:
    from scipy.signal.windows import tukey

    rng = np.random.default_rng(4)
    t = np.arange(24_000) / SPEC.sample_rate
    floor = 1e-3 * rng.normal(size=t.shape)  # the same floor in both signals
    harmonics = sum(0.05 * np.sin(2 * np.pi * f * t) for f in (200, 300, 400, 600, 700, 800, 900))
    spectrum = np.fft.rfft(rng.normal(size=t.shape))
    freqs = np.fft.rfftfreq(t.shape[0], 1 / SPEC.sample_rate)
    noise = np.fft.irfft(spectrum * ((freqs > 170) & (freqs < 980)), t.shape[0])  # 0.15-1 kHz only
    noise *= np.std(harmonics) / np.std(noise)
    fade = tukey(t.shape[0], 0.5)  # no edge for the STFT's reflect padding to turn into a click
    ref, out = fade * harmonics + floor, fade * noise + floor
    assert np.allclose(metrics.band_lsd_db(ref, ref), 0.0)
    assert np.allclose(metrics.band_lsd_db(ref, 0.5 * ref), 6.02, atol=0.01)
    # The same energy in the bands the harmonics are in, so the band bias barely moves ...
    bias, lsd = metrics.band_bias_db(ref, out), metrics.band_lsd_db(ref, out)
    lo, hi = metrics.BANDS_HZ.index(150), metrics.BANDS_HZ.index(1000)
    assert np.all(np.abs(bias[lo:hi]) < 2.0)
    # ... but the distance is large there, and nil where the two signals are the same.
    assert np.all(lsd[lo:hi] > 10.0)
    assert np.all(lsd[metrics.BANDS_HZ.index(4000) :] < 1.0)


def test_voiced_frames_are_told_from_noise_and_scored_apart() -> None:
    rng = np.random.default_rng(5)
    t = np.arange(24_000) / SPEC.sample_rate
    vowel = sum(0.1 / k * np.sin(2 * np.pi * 180 * k * t) for k in range(1, 8))  # F0 180 Hz
    noise = 0.05 * rng.normal(size=t.shape)
    per = metrics.periodicity(np.concatenate([vowel, noise]))
    assert per.shape == (48_000 // SPEC.hop_length + 1,)
    half = per.shape[0] // 2
    assert np.all(per[: half - 3] > metrics.VOICED_THRESHOLD)  # away from the seam
    assert np.all(per[half + 3 :] < metrics.VOICED_THRESHOLD)
    assert np.all(metrics.periodicity(np.zeros(3000)) == 0.0)  # silence: defined, not NaN
    ref = np.concatenate([vowel, noise])
    # Damage only the noise half: the voiced LSD stays 0, the unvoiced one grows.
    out = np.concatenate([vowel, 0.25 * noise])
    voiced, unvoiced = metrics.lsd_voiced_unvoiced(ref, out)
    assert voiced < 1.0 and unvoiced > 10.0
    # Two independent noises of the same spectrum: the ~7.9 dB floor of a sampling vocoder.
    _, floor = metrics.lsd_voiced_unvoiced(noise, 0.05 * rng.normal(size=t.shape))
    assert 7.0 < floor < 9.0
    assert math.isnan(metrics.lsd_voiced_unvoiced(noise, noise)[0])  # no voiced frames at all

    # The vowel's own harmonics: periodic, its pitch found, every frame voiced in both.
    same = metrics.voicing_scores(ref, out)
    assert same["periodicity_original"] > 0.8
    assert same["periodicity"] == pytest.approx(same["periodicity_original"], abs=0.01)
    assert same["f0_error_cents"] < 1.0 and same["vuv_error"] < 0.05
    # Noise in the vowel's place: little periodicity, and voiced frames that lost their voicing.
    hiss = metrics.voicing_scores(vowel, 0.2 * rng.normal(size=t.shape))
    assert hiss["periodicity"] < 0.3 and hiss["vuv_error"] > 0.9
    # The vowel sung 3% (51 cents) sharp: as periodic, as voiced, and the error is measured.
    sharp = sum(0.1 / k * np.sin(2 * np.pi * 180 * 1.03 * k * t) for k in range(1, 8))
    off = metrics.voicing_scores(vowel, sharp)
    assert off["periodicity"] > 0.8 and off["vuv_error"] == 0.0
    assert off["f0_error_cents"] == pytest.approx(1200 * np.log2(1.03), abs=10)
    assert all(
        math.isnan(off)
        for k, off in metrics.voicing_scores(noise, noise).items()
        if k != "vuv_error"
    )


def test_band_periodicity_tells_harmonic_bands_from_noise_bands() -> None:
    """A voice harmonic below 2 kHz with noise above it (as the Festival voice's own voiced
    frames are): its own band periodicity is high below and near 0 above; a copy whose low band
    became noise loses it there; white noise has none anywhere; no voiced frames: NaN."""
    from scipy.signal.windows import tukey

    rng = np.random.default_rng(8)
    t = np.arange(36_000) / SPEC.sample_rate
    f0 = 160.0
    voiced = sum(0.1 / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 2000 // int(f0)))
    hiss = metrics._band_pass(0.05 * rng.normal(size=t.shape), 2000, SPEC.sample_rate / 2)
    fade = tukey(t.shape[0], 0.2)
    ref = fade * (voiced + hiss)
    own = metrics.band_periodicity(ref, ref)
    assert own.shape == (len(metrics.BANDS_HZ) - 1,)
    low, high = (
        metrics.BANDS_HZ.index(500),
        metrics.BANDS_HZ.index(4000),
    )  # bands 0.5-2 kHz, 4-12 kHz
    assert np.all(own[low : low + 2] > 0.9) and np.all(np.abs(own[high:]) < 0.2)
    smeared = fade * (metrics._band_pass(0.1 * rng.normal(size=t.shape), 150, 2000) + hiss)
    lost = metrics.band_periodicity(ref, smeared)
    assert np.all(lost[low : low + 2] < 0.3)
    assert np.all(np.abs(metrics.band_periodicity(ref, 0.1 * rng.normal(size=t.shape))) < 0.2)
    assert np.all(np.isnan(metrics.band_periodicity(hiss, hiss)))


def test_noise_oracle_keeps_voiced_harmonics_and_redraws_the_noise() -> None:
    """A vowel with hiss above 4 kHz, then hiss alone: the oracle gives back the vowel's harmonics
    as they are, and every noise a fresh draw of the same spectrum, so the noise scores the
    ~7.9 dB two-noise floor with no energy error, and a second seed draws it differently."""
    pytest.importorskip("librosa")
    from scipy.signal.windows import tukey

    rng = np.random.default_rng(9)
    t = np.arange(24_000) / SPEC.sample_rate
    vowel = sum(0.1 / k * np.sin(2 * np.pi * 170 * k * t) for k in range(1, 4000 // 170))
    hiss = metrics._band_pass(0.05 * rng.normal(size=2 * t.shape[0]), 4000, SPEC.sample_rate / 2)
    noise = 0.05 * rng.normal(size=t.shape)
    ref = (np.concatenate([tukey(t.shape[0], 0.1) * vowel, noise]) + hiss).astype(np.float32)
    out = systems.noise_oracle(ref, seed=0)
    assert out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_array_equal(out, systems.noise_oracle(ref, seed=0))
    assert metrics.log_spectral_distance(out, systems.noise_oracle(ref, seed=1)) > 5.0

    # The vowel's frames, away from its fade-in (not yet voiced: redrawn) and from the seam.
    vowel = slice(2 * SPEC.win_length, t.shape[0] - 2 * SPEC.win_length)
    vowel_lsd = metrics.band_lsd_db(ref[vowel], out[vowel])
    low, high = metrics.BANDS_HZ.index(150), metrics.BANDS_HZ.index(4000)
    assert np.all(vowel_lsd[low : high - 1] < 1.0)  # the harmonics, kept
    assert vowel_lsd[high - 1] < 2.0  # 2-4 kHz: kept, but next to the redrawn band
    assert np.all((vowel_lsd[high:] > 6.0) & (vowel_lsd[high:] < 10.0))  # the hiss, redrawn
    assert np.all(np.abs(metrics.band_bias_db(ref, out)[low:]) < 1.0)
    # The unvoiced half is all redrawn: the floor of two independent noises, not a copy.
    tail = slice(t.shape[0] + 2 * SPEC.win_length, None)
    voiced, unvoiced = metrics.lsd_voiced_unvoiced(ref[tail], out[tail])
    assert math.isnan(voiced) and 7.0 < unvoiced < 9.0


def test_lengths_are_aligned_and_empty_rejected() -> None:
    y = _speechlike(0.3, 3)
    assert metrics.log_spectral_distance(y, np.concatenate([y, np.ones(500, np.float32)])) == 0.0
    with pytest.raises(ValueError):
        metrics.log_spectral_distance(y, np.zeros(0, np.float32))


def _corpus(root: Path, n: int = 2) -> Path:
    (root / "wav").mkdir(parents=True)
    (root / "mel").mkdir()
    rows = []
    for i in range(n + 1):
        uid = f"t{i:02d}"
        y = _speechlike(0.4, 10 + i)
        sf.write(root / "wav" / f"{uid}.wav", y, SPEC.sample_rate, subtype="PCM_16")
        np.save(
            root / "mel" / f"{uid}.npy",
            log_mel(sf.read(root / "wav" / f"{uid}.wav", dtype="float32")[0]),
        )
        rows.append(
            {
                "id": uid,
                "speed": 1.0,
                "samples": y.size,
                "frames": 0,
                "split": "test" if i < n else "train",
                "text": f"tone {i}",
            }
        )
    with (root / "metadata.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_evaluate_runtime_and_baselines(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("librosa")
    from models.runtime import VocoderRuntime

    utts = evaluate.load_test_set(_corpus(tmp_path / "c"), limit=None, max_seconds=None)
    assert [u.id for u in utts] == ["t00", "t01"]  # test split only
    summary, audio = evaluate.evaluate(
        utts, {"tiny": VocoderRuntime.load(tiny_model_dir)}, griffin_lim_iters=4
    )
    assert list(summary) == ["tiny", "griffin-lim", "lpc-noise", "noise-oracle"]
    for m in summary.values():
        assert m["n"] == 2 and m["lsd_db"] > 0 and m["mcd_db"] > 0 and m["rtf"] > 0
        assert m["lsd_max_db"] == max(m["per_utterance"]["lsd_db"]) >= m["lsd_db"]
        assert len(m["band_bias_db"]) == len(m["band_lsd_db"]) == len(metrics.BANDS_HZ) - 1
        assert (
            len(m["band_periodicity"])
            == len(m["band_periodicity_original"])
            == len(metrics.BANDS_HZ) - 1
        )
        assert all(b >= 0 for b in m["band_lsd_db"])
        assert np.isfinite(m["lsd_voiced_db"]) or np.isfinite(m["lsd_unvoiced_db"])
        if np.isfinite(m["lsd_voiced_db"]):
            assert (
                -1.0 <= m["periodicity"] <= 1.0
                and m["periodicity_original"] > metrics.VOICED_THRESHOLD
            )
        assert 0.0 <= m["vuv_error"] <= 1.0
    for u in utts:
        assert set(audio[u.id]) == {"original", "tiny", "griffin-lim", "lpc-noise", "noise-oracle"}
        for y in audio[u.id].values():
            assert y.shape == u.audio.shape and np.all(np.isfinite(y))
    # The tiny random model clips every frame and has no redraws; the baselines have no frames.
    frames = sum(u.mel.shape[0] for u in utts)
    assert (
        summary["tiny"]["frames_redrawn"] == 0 and 0 < summary["tiny"]["frames_clipped"] <= frames
    )
    assert (
        summary["griffin-lim"]["frames_redrawn"] is None is summary["lpc-noise"]["frames_clipped"]
    )
    assert summary["noise-oracle"]["frames_redrawn"] is None
    # Both baselines from the true mel are far closer to the original than an untrained vocoder.
    assert summary["griffin-lim"]["lsd_db"] < summary["tiny"]["lsd_db"]
    assert summary["lpc-noise"]["lsd_db"] < summary["tiny"]["lsd_db"]


def test_cli_writes_table_doc_plots_and_samples(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    corpus = _corpus(tmp_path / "c")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "--corpus",
            str(corpus),
            "--model",
            f"tiny={tiny_model_dir}",
            "--no-griffin-lim",
            "--no-lpc-noise",
            "--no-noise-oracle",
            "--no-perceptual",
            "--limit",
            "1",
            "--json",
            str(tmp_path / "q.json"),
            "--doc",
            str(tmp_path / "quality.md"),
            "--img-dir",
            str(tmp_path / "img"),
            "--samples-dir",
            str(tmp_path / "samples"),
        ]
    )
    assert cli.run(args) == 0
    assert "| tiny |" in capsys.readouterr().out
    data = json.loads((tmp_path / "q.json").read_text())
    assert data["utterances"] == ["t00"] and data["summary"]["tiny"]["n"] == 1
    doc = (tmp_path / "quality.md").read_text()
    assert "| tiny |" in doc and "img/spectrogram-t00.png" in doc
    # the distance, voicing, band-energy, band-distance and band-periodicity tables
    assert doc.count("| tiny |") == 5 and doc.count("| original |") == 1
    assert (tmp_path / "img" / "spectrogram-t00.png").stat().st_size > 1000
    y, sr = sf.read(tmp_path / "samples" / "t00-tiny.wav")
    assert sr == SPEC.sample_rate and y.shape[0] == int(0.4 * SPEC.sample_rate)


def test_cli_scores_one_voice_under_other_synthesis_settings(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # The tiny random model reaches full scale in every frame: with redraws allowed by
    # --synthesis, the same voice redraws, without them it does not.
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        [
            *("--corpus", str(_corpus(tmp_path / "c")), "--limit", "1"),
            *("--model", f"own={tiny_model_dir}", "--model", f"redraws={tiny_model_dir}"),
            *("--synthesis", 'redraws={"clip_retries": 2}'),
            *("--no-griffin-lim", "--no-lpc-noise", "--no-noise-oracle", "--no-perceptual"),
            *("--json", str(tmp_path / "q.json"), "--doc", str(tmp_path / "quality.md")),
        ]
    )
    assert cli.run(args) == 0
    summary = json.loads((tmp_path / "q.json").read_text())["summary"]
    assert summary["own"]["frames_redrawn"] == 0 < summary["redraws"]["frames_redrawn"]
    assert (
        'synthesis settings over its own: `{"clip_retries": 2}`'
        in (tmp_path / "quality.md").read_text()
    )


def test_cli_bad_inputs_fail_cleanly(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert (
        cli.run(
            parser.parse_args(
                ["--corpus", str(tmp_path / "none"), "--model", f"t={tiny_model_dir}"]
            )
        )
        == 1
    )
    corpus = _corpus(tmp_path / "c")
    assert cli.run(parser.parse_args(["--corpus", str(corpus), "--model", "no-equals-sign"])) == 1
    assert (
        cli.run(
            parser.parse_args(["--corpus", str(corpus), "--model", f"x={tmp_path / 'missing'}"])
        )
        == 1
    )
    # a baseline that is not scored, or without the scores it compares
    tiny = ("--corpus", str(corpus), "--model", f"t={tiny_model_dir}", "--no-griffin-lim")
    for bad, why in [
        (("--baseline", "griffin-lim"), "'griffin-lim' is not scored here"),
        (("--baseline", "t", "--no-perceptual"), "drop --no-perceptual"),
        (("--synthesis", 'x={"clip_retries": 1}'), "for ['x'], which no --model names"),
        (("--synthesis", 't={"clip_retries": 99}'), "--synthesis for t: clip_retries is in"),
        (("--synthesis", 't={"no_such": 1}'), "unknown synthesis settings: ['no_such']"),
        (("--synthesis", "t=[1]"), "NAME=JSON object"),
        (("--synthesis", "t={oops"), "not a JSON object"),
    ]:
        assert cli.run(parser.parse_args([*tiny, *bad])) == 1
        assert why in capsys.readouterr().err
