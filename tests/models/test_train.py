"""`sparrow train` on a tiny synthetic corpus: loss goes down, export is block sparse and vocodes."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")

from models import train as train_mod  # noqa: E402
from models.config import TINY, VocoderConfig  # noqa: E402
from models.features import log_mel  # noqa: E402
from models.reference import SPARSE_WEIGHTS, WEIGHT_SHAPES, vocode  # noqa: E402
from models.sparsity import block_norms  # noqa: E402


def make_corpus(root: Path, n_train: int = 6, n_test: int = 2, seconds: float = 0.6) -> Path:
    """Harmonic tones with a slow pitch glide: learnable structure, written in the `sparrow data` layout."""
    (root / "wav").mkdir(parents=True)
    (root / "mel").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_train + n_test):
        uid = f"u{i:03d}"
        n = int(seconds * 24_000) + int(rng.integers(0, 300))
        t = np.arange(n) / 24_000
        f0 = 120 + 60 * rng.random() + 40 * t
        phase = 2 * np.pi * np.cumsum(f0) / 24_000
        audio = sum(0.3 / k * np.sin(k * phase) for k in (1, 2, 3)) + 0.003 * rng.normal(size=n)
        audio = audio.astype(np.float32)
        sf.write(root / "wav" / f"{uid}.wav", audio, 24_000, subtype="PCM_16")
        audio16 = sf.read(root / "wav" / f"{uid}.wav", dtype="float32")[0]
        mel = log_mel(audio16)
        np.save(root / "mel" / f"{uid}.npy", mel)
        split = "train" if i < n_train else "test"
        rows.append({"id": uid, "speed": 1.0, "samples": n, "frames": mel.shape[0], "split": split, "text": "tone"})
    with (root / "metadata.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "speed", "samples", "frames", "split", "text"])
        w.writeheader()
        w.writerows(rows)
    return root


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_mod.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def test_corpus_crops_follow_the_contract(corpus: Path) -> None:
    c = train_mod.Corpus(corpus, "train", TINY)
    assert c.refresh() == 6
    assert c.refresh() == 0  # a second read adds nothing new
    mel, prev, target = train_mod.sample_batch(c.utterances, TINY, 5, 2, np.random.default_rng(0))
    assert mel.shape == (5, 2 + 5, 80)
    assert prev.shape == target.shape == (5, 600)
    assert target.min() >= 0 and target.max() <= 255
    # Teacher forcing: input n is the decoded class of target n - 1.
    from models.reference import mulaw_decode

    np.testing.assert_array_equal(prev[:, 1:], mulaw_decode(target[:, :-1]))


def test_missing_corpus_is_a_clear_error(tmp_path: Path) -> None:
    args = parse("--tiny", "--steps", "1", "--corpus", str(tmp_path / "nope"), "--run-dir", str(tmp_path))
    assert train_mod.run(args) == 1


def test_cubic_schedule() -> None:
    d = [train_mod.cubic_density(p, 0.1, 0.2, 0.6) for p in np.linspace(0, 1, 51)]
    assert d[0] == 1.0 and d[10] == 1.0 and d[-1] == pytest.approx(0.1)
    assert d[30] == pytest.approx(0.1)  # target reached at the end step and held
    assert all(a >= b for a, b in zip(d, d[1:]))  # never grows back


def test_training_reduces_loss_and_exports_sparse_weights(corpus: Path, tmp_path: Path) -> None:
    run_dir, out = tmp_path / "runs", tmp_path / "export"
    args = parse(
        "--tiny", "--corpus", str(corpus), "--run-dir", str(run_dir), "--name", "t", "--steps", "60",
        "--batch", "8", "--crop-frames", "2", "--lr", "3e-3", "--warmup", "1", "--threads", "1",
        "--prune-start", "0.2", "--prune-end", "0.6", "--prune-every", "5", "--export", str(out),
        "--log-seconds", "1000",
    )
    held = train_mod.Corpus(corpus, "test", TINY)
    held.refresh()
    batch = train_mod.sample_batch(held.utterances, TINY, 8, 2, np.random.default_rng(7))
    torch.manual_seed(args.seed)  # the same initial model the run starts from
    before = train_mod.evaluate_loss(train_mod.WaveRNN(TINY), batch, bf16=False)
    assert train_mod.run(args) == 0

    state = train_mod.load_checkpoint(run_dir / "t")
    assert state["step"] == 60
    model, config = train_mod.model_from_checkpoint(state)
    after = train_mod.evaluate_loss(model, batch, bf16=False)
    assert before == pytest.approx(np.log(256), abs=0.1)
    assert after < before - 0.5, (before, after)

    weights = dict(np.load(out / "weights.npz"))
    assert VocoderConfig.load(out / "config.json") == TINY
    assert set(weights) == set(WEIGHT_SHAPES)
    for name in SPARSE_WEIGHTS:
        assert weights[name].dtype == np.float32
        norms = block_norms(weights[name], (TINY.block_rows, TINY.block_cols))
        want = max(1, round(norms.size * TINY.density))
        assert np.count_nonzero(norms) == want, name
    audio = vocode(weights, TINY, np.load(corpus / "mel" / "u006.npy")[:4], seed=0)
    assert audio.shape == (4 * TINY.hop_length,)
    assert np.all(np.isfinite(audio)) and np.abs(audio).max() <= 1.0
    assert audio.std() > 0


def test_resume_continues_and_export_only(corpus: Path, tmp_path: Path) -> None:
    common = ("--tiny", "--corpus", str(corpus), "--run-dir", str(tmp_path), "--name", "r",
              "--batch", "4", "--crop-frames", "1", "--threads", "1", "--log-seconds", "1000")
    assert train_mod.run(parse(*common, "--steps", "3")) == 0
    assert train_mod.run(parse(*common, "--steps", "5", "--resume")) == 0
    assert train_mod.load_checkpoint(tmp_path / "r")["step"] == 5
    small = tmp_path / "small.pt"
    assert train_mod.run(parse(*common, "--steps", "0", "--resume", "--export", str(tmp_path / "e"),
                               "--save-small", str(small))) == 0
    assert (tmp_path / "e" / "weights.npz").exists()
    # The compact checkpoint resumes too (fresh optimizer moments).
    assert train_mod.run(parse(*common, "--steps", "6", "--resume", str(small), "--name", "r2")) == 0
    assert train_mod.load_checkpoint(tmp_path / "r2")["step"] == 6
