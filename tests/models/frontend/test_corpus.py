"""`sparrow data` on a tiny sentence list, with the real Festival."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.dsp.features import SPEC, log_mel
from models.frontend import corpus
from server.cli import main as sparrow

pytestmark = pytest.mark.festival

SENTENCES = [
    "# a comment line, ignored",
    "Hello there.",
    "",
    'It cost $5 in 1984; "quotes" and (parentheses) too!',
    "Short.",
]


@pytest.fixture(scope="module")
def sentence_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sentences") / "s.txt"
    path.write_text("\n".join(SENTENCES) + "\n")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, sentence_file: Path) -> Path:
    out = tmp_path_factory.mktemp("corpus_a")
    assert (
        sparrow(["data", "--out", str(out), "--sentences", str(sentence_file), "--jobs", "2"]) == 0
    )
    return out


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "metadata.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_outputs_follow_the_contract(built: Path) -> None:
    rows = _rows(built)
    assert [r["id"] for r in rows] == ["s00000", "s00001", "s00002"]
    assert list(rows[0]) == list(corpus.FIELDS)
    assert rows[1]["text"] == (
        'It cost five dollars in nineteen eighty four; "quotes" and (parentheses) too!'
    )
    for row in rows:
        audio, sr = sf.read(built / "wav" / f"{row['id']}.wav", dtype="float32")
        assert (
            sr == SPEC.sample_rate
            and sf.info(built / "wav" / f"{row['id']}.wav").subtype == "PCM_16"
        )
        mel = np.load(built / "mel" / f"{row['id']}.npy")
        assert mel.dtype == np.float32
        assert int(row["samples"]) == audio.size
        assert int(row["frames"]) == mel.shape[0] == audio.size // SPEC.hop_length + 1
        assert mel.shape[1] == 80
        # The mel is exactly the contract's log-mel of the audio as stored in the wav.
        np.testing.assert_array_equal(mel, log_mel(audio))
        assert float(row["speed"]) in corpus.SPEEDS
        assert row["split"] == "train"
    assert not list(built.rglob("*.tmp"))


def test_same_inputs_give_identical_files(
    built: Path, sentence_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    again = tmp_path / "corpus_b"
    # Temporary files in a directory of this test's own (inherited by the forked workers, and by
    # spawned ones through TMPDIR), so that no other Festival user on the host can disturb it.
    own_tmp = tmp_path / "tmp"
    own_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(own_tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(own_tmp))
    assert (
        sparrow(["data", "--out", str(again), "--sentences", str(sentence_file), "--jobs", "1"])
        == 0
    )
    # The worker's warm Festival is stopped and its directory removed when the worker exits.
    assert list(own_tmp.glob("sparrow-festival-*")) == []
    for sub in ("mel", "wav"):
        names = sorted(p.name for p in (built / sub).iterdir())
        assert names == sorted(p.name for p in (again / sub).iterdir()) and len(names) == 3
        for name in names:
            assert (built / sub / name).read_bytes() == (again / sub / name).read_bytes(), name
    assert (built / "metadata.csv").read_bytes() == (again / "metadata.csv").read_bytes()


def test_resume_only_fills_in_what_is_missing(sentence_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    args = ["data", "--out", str(out), "--sentences", str(sentence_file)]
    assert sparrow([*args, "--limit", "2"]) == 0
    assert [r["id"] for r in _rows(out)] == ["s00000", "s00001"]
    kept = (out / "wav" / "s00000.wav").stat().st_mtime_ns
    (out / "mel" / "s00001.npy").unlink()  # as if interrupted before the mel was written
    assert sparrow(args) == 0
    assert [r["id"] for r in _rows(out)] == ["s00000", "s00001", "s00002"]
    assert (out / "wav" / "s00000.wav").stat().st_mtime_ns == kept  # not synthesised again
    assert (out / "mel" / "s00001.npy").is_file()


def test_plan_is_deterministic_with_a_two_percent_test_split() -> None:
    sentences = [f"Sentence number {i}." for i in range(200)]
    a, b = corpus.plan(sentences), corpus.plan(sentences)
    assert a == b
    assert {i.speed for i in a} == set(corpus.SPEEDS)  # all five speeds are used
    assert [i.index for i in a if i.split == "test"] == [49, 99, 149, 199]
    assert corpus.plan(sentences, seed=1) != a  # the seed changes the speeds
    assert a[3].text == "Sentence number three."


def test_bundled_sentence_list() -> None:
    sentences = corpus.read_sentences(corpus.default_sentences_path())
    assert 2500 <= len(sentences) <= 4000
    assert len(set(sentences)) == len(sentences)
    lengths = [len(s) for s in sentences]
    assert min(lengths) < 20 and max(lengths) > 150  # varied length
    assert sum(s.endswith("?") for s in sentences) > 100  # questions, not only statements


def test_bad_arguments(tmp_path: Path) -> None:
    assert sparrow(["data", "--out", str(tmp_path), "--sentences", str(tmp_path / "nope")]) == 2
    assert sparrow(["data", "--out", str(tmp_path), "--limit", "0"]) == 2
    assert sparrow(["data", "--out", str(tmp_path), "--jobs", "0"]) == 2
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    assert sparrow(["data", "--out", str(tmp_path), "--sentences", str(empty)]) == 2
