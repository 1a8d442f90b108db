"""Perceptual scores of `sparrow eval`: WER by its definition, DNSMOS and pocketsphinx on real
Festival speech, and the eval report's headline table (the `eval` extra: scripts/setup --test)."""

from __future__ import annotations

import argparse
import csv
import json
import math
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.dsp.features import SPEC, log_mel
from models.evaluation import cli as ev
from models.evaluation import perceptual as pm

SENTENCES = (
    "Did you remember to carry the bakery before you left?",
    "They climbed for hours, but nobody found the bicycle.",
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The models load from the installed packages: any attempt to connect anywhere fails."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access during a perceptual test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


# --- word error rate -------------------------------------------------------------------------------


def test_word_edits_is_the_levenshtein_distance() -> None:
    assert pm.word_edits([], []) == 0
    assert pm.word_edits(["a", "b"], []) == 2 and pm.word_edits([], ["a", "b", "c"]) == 3
    assert pm.word_edits(list("kitten"), list("sitting")) == 3  # the textbook pair
    assert pm.word_edits(list("flaw"), list("lawn")) == 2
    ref = pm.words("the cat sat on the mat")
    assert pm.word_edits(ref, ref) == 0
    assert pm.word_edits(ref, pm.words("the cat sat on mat")) == 1  # deletion
    assert pm.word_edits(ref, pm.words("the bat sat on the mat")) == 1  # substitution
    assert pm.word_edits(ref, pm.words("the cat sat on the the mat")) == 1  # insertion
    # Reversed: insert "mat", keep "the", "cat" -> "on", keep "sat", "on" -> "cat", keep "the",
    # delete "mat".
    assert pm.word_edits(ref, pm.words("mat the on sat cat the")) == 4


def test_word_error_rate_by_definition() -> None:
    ref = "the cat sat on the mat"
    assert pm.word_error_rate([ref], [ref]) == 0.0
    assert pm.word_error_rate([ref], ["the cat sat on mat"]) == pytest.approx(1 / 6)
    assert pm.word_error_rate([ref], [""]) == 1.0
    assert pm.word_error_rate(["a"], ["b c d"]) == 3.0  # insertions can take it above 1
    # Corpus WER: edits over all reference words (4 / 6), not the mean of per-utterance rates (0.5).
    assert pm.word_error_rate(["a b", "c d e f"], ["a b", "x"]) == pytest.approx(4 / 6)
    # Case, punctuation, quotes and hyphens are not words; apostrophes inside a word are.
    assert (
        pm.word_error_rate(
            ['The nurse said, "Bring the Hail-stones."', "Don't go at one o'clock!"],
            ["the nurse said bring the hail stones", "don't go at one o'clock"],
        )
        == 0.0
    )
    assert pm.word_error_rate(["don't"], ["dont"]) == 1.0
    assert math.isnan(pm.word_error_rate([""], ["something"]))
    with pytest.raises(ValueError):
        pm.word_error_rate(["a"], [])


# --- the models on Festival speech -----------------------------------------------------------------


@pytest.fixture(scope="module")
def festival_speech() -> Iterator[list[np.ndarray]]:
    """The SENTENCES spoken by Festival's slt voice: float32 [L] at 24 kHz each."""
    from models.frontend.festival_frontend import FestivalFrontend

    frontend = FestivalFrontend()
    assert frontend.available(), "Festival and festvox-us-slt-hts must be installed for these tests"
    try:
        yield [frontend.synthesize(s, voice="slt") for s in SENTENCES]
    finally:
        frontend.close()


@pytest.mark.festival
def test_dnsmos_scores_added_noise_lower(festival_speech: list[np.ndarray]) -> None:
    clean = festival_speech[0]
    rms = float(np.sqrt(np.mean(clean.astype(np.float64) ** 2)))
    noise = np.random.default_rng(0).standard_normal(clean.shape[0]) * rms / 10 ** (10 / 20)
    noisy = (clean + noise).astype(np.float32)  # white noise 10 dB below the speech
    a, b = pm.dnsmos(clean), pm.dnsmos(noisy)
    assert set(a) == {"sig", "bak", "ovrl", "p808"}
    assert all(1.0 <= v <= 5.0 for v in (*a.values(), *b.values()))
    assert b["bak"] < a["bak"] and b["ovrl"] < a["ovrl"] and b["p808"] < a["p808"]
    # The same speech at 16 kHz scores the same: the rate is handled, not assumed.
    at16 = pm.to_model_rate(clean)
    assert at16.shape[0] == pytest.approx(clean.shape[0] * 2 / 3, abs=2)
    assert pm.dnsmos(at16, pm.MODEL_RATE) == pytest.approx(a)


@pytest.mark.festival
def test_asr_recognises_festival_speech(festival_speech: list[np.ndarray]) -> None:
    heard = [pm.transcribe(y) for y in festival_speech]
    assert pm.word_error_rate(list(SENTENCES), heard) < 0.5, heard
    # In silence it hears next to nothing (a stray word at most), so nearly every word is missing.
    assert pm.word_error_rate([SENTENCES[0]], [pm.transcribe(np.zeros(SPEC.sample_rate))]) > 0.8


@pytest.mark.festival
def test_transcripts_do_not_depend_on_what_was_decoded_before(
    festival_speech: list[np.ndarray],
) -> None:
    # A recogniser that carried its cepstral mean over from a near-silent clip heard "climb" for
    # "climbed" in the second sentence: each system's WER would depend on the order it was scored.
    quiet = 0.001 * np.random.default_rng(0).normal(size=SPEC.sample_rate)
    alone = [pm.transcribe(y) for y in festival_speech]
    after_quiet = []
    for y in festival_speech:
        pm.transcribe(quiet)
        after_quiet.append(pm.transcribe(y))
    assert after_quiet == alone


def test_server_and_eval_imports_load_no_model_runtime() -> None:
    code = (
        "import sys, server.app, server.cli, models.evaluation.evaluate; "
        "print(sorted(m for m in ('onnxruntime', 'pocketsphinx', 'speechmos') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert out.stdout.strip() == "[]"


# --- sparrow eval ----------------------------------------------------------------------------------


@pytest.fixture
def festival_corpus(tmp_path: Path, festival_speech: list[np.ndarray]) -> Path:
    """A corpus as `sparrow data` writes it, of the SENTENCES, all held out."""
    root = tmp_path / "corpus"
    (root / "wav").mkdir(parents=True)
    (root / "mel").mkdir()
    rows = []
    for i, (text, audio) in enumerate(zip(SENTENCES, festival_speech)):
        uid = f"s{i:05d}"
        sf.write(root / "wav" / f"{uid}.wav", audio, SPEC.sample_rate, subtype="PCM_16")
        np.save(root / "mel" / f"{uid}.npy", log_mel(sf.read(root / "wav" / f"{uid}.wav")[0]))
        rows.append({"id": uid, "speed": 1.0, "samples": audio.size, "frames": 0})
        rows[-1] |= {"split": "test", "text": text}
    with (root / "metadata.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def _eval_args(corpus: Path, model: Path, tmp_path: Path, *more: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ev.add_arguments(parser)
    return parser.parse_args(
        [
            *("--corpus", str(corpus), "--model", f"tiny={model}", "--max-seconds", "0"),
            *("--no-lpc-noise", "--no-noise-oracle"),
            *("--json", str(tmp_path / "q.json"), "--doc", str(tmp_path / "quality.md")),
            *more,
        ]
    )


@pytest.mark.festival
@pytest.mark.slow
def test_eval_prints_perceptual_headline(
    tiny_model_dir: Path,
    festival_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert ev.run(_eval_args(festival_corpus, tiny_model_dir, tmp_path)) == 0
    out = capsys.readouterr().out
    header = "| system | DNSMOS SIG ↑ | DNSMOS BAK ↑ | DNSMOS OVRL ↑ | DNSMOS P.808 ↑ | ASR WER ↓ |"
    assert out.index(header) < out.index("| system | LSD (dB)")  # the headline, then diagnostics
    scores = json.loads((tmp_path / "q.json").read_text())["perceptual"]
    assert list(scores) == ["original", "tiny", "griffin-lim"]
    for name, m in scores.items():
        assert set(m) == {"sig", "bak", "ovrl", "p808", "wer"}
        row = f"| {name} | {m['sig']:.2f} | {m['bak']:.2f} | {m['ovrl']:.2f} | {m['p808']:.2f} "
        assert row in out
    # The texts reach the recogniser: Festival's own audio is understood, the untrained tiny
    # model's hiss is neither understood nor rated like speech.
    assert scores["original"]["wer"] < 0.5 < scores["tiny"]["wer"]
    assert scores["tiny"]["ovrl"] < scores["original"]["ovrl"]
    doc = (tmp_path / "quality.md").read_text()
    assert doc.index(header) < doc.index("| system | LSD (dB)") and "pocketsphinx" in doc


@pytest.mark.festival
@pytest.mark.slow
def test_eval_compares_systems_with_a_baseline_over_seeds(
    tiny_model_dir: Path,
    festival_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    more = ("--no-griffin-lim", "--seed", "3", "--seed", "4", "--baseline", "original")
    assert ev.run(_eval_args(festival_corpus, tiny_model_dir, tmp_path, *more)) == 0
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "q.json").read_text())
    assert data["seeds"] == [3, 4] and data["baseline"] == "original"
    # every utterance under both seeds is a pair; the untrained model's hiss is rated and
    # understood far below Festival's speech, beyond any doubt the pairs leave
    tiny = data["comparison"]["tiny"]
    assert tiny["pairs"] == 2 * len(SENTENCES) and list(data["comparison"]) == ["tiny"]
    assert tiny["ovrl"]["mean"] + 2 * tiny["ovrl"]["se"] < 0
    assert tiny["wer"]["mean"] > 0.3
    row = next(line for line in out.splitlines() if line.startswith("| tiny | ") and "±" in line)
    assert f"{tiny['ovrl']['mean']:+.3f} ± {tiny['ovrl']['se']:.3f} (lower)" in row
    assert "paired over utterances × 2 seed(s)" in out
    # the headline averages both seeds: the model's mean OVRL is that of its rows under each
    scores = data["perceptual"]
    assert scores["tiny"]["ovrl"] == pytest.approx(
        scores["original"]["ovrl"] + tiny["ovrl"]["mean"]
    )
    doc = (tmp_path / "quality.md").read_text()
    assert "--seed 3 --seed 4" in doc and "Difference from `original`" in doc


@pytest.mark.slow
def test_eval_without_the_extra_names_it_and_keeps_the_diagnostics(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A corpus of one short tone: the diagnostics need no speech.
    corpus = tmp_path / "corpus"
    (corpus / "wav").mkdir(parents=True)
    (corpus / "mel").mkdir()
    t = np.arange(int(0.3 * SPEC.sample_rate)) / SPEC.sample_rate
    sf.write(corpus / "wav" / "t0.wav", 0.3 * np.sin(2 * np.pi * 200 * t), SPEC.sample_rate)
    np.save(corpus / "mel" / "t0.npy", log_mel(sf.read(corpus / "wav" / "t0.wav")[0]))
    (corpus / "metadata.csv").write_text("id,split,text\nt0,test,a tone\n")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # importing it now fails
    assert pm.missing() == ["onnxruntime"]
    assert ev.run(_eval_args(corpus, tiny_model_dir, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "pip install -e '.[eval]'" in out and "missing: onnxruntime" in out
    assert "| system | LSD (dB)" in out and "| tiny |" in out and "DNSMOS SIG" not in out
    assert json.loads((tmp_path / "q.json").read_text())["perceptual"] == {}
