"""`sparrow train` on a tiny synthetic corpus: loss goes down, export is block sparse and
vocodes."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trainkit import parse, tiny_run_args

from models.train import checkpoint as checkpoint_mod
from models.train import cli as cli_mod
from models.train import corpus as corpus_mod
from models.train import pruning as pruning_mod
from models.train import train as train_mod
from models.train import wavernn as wavernn_mod
from models.vocoder.config import TINY, VocoderConfig
from models.vocoder.params import SPARSE_WEIGHTS, WEIGHT_SHAPES
from models.vocoder.reference import vocode
from models.vocoder.sparsity import block_norms

pytestmark = pytest.mark.slow


def make_corpus(root: Path) -> Path:
    return corpus_mod.write_synthetic_corpus(root)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def test_corpus_crops_follow_the_contract(corpus: Path) -> None:
    c = corpus_mod.Corpus(corpus, "train", TINY)
    assert c.refresh() == 6
    assert c.refresh() == 0  # a second read adds nothing new
    mel, inputs, target = corpus_mod.sample_batch(
        c.utterances, TINY, 5, 2, np.random.default_rng(0)
    )
    assert mel.shape == (5, 2 + 5, 80)
    assert inputs.shape == (*target.shape, 5) and target.shape == (5, 600)
    assert target.min() >= 0 and target.max() <= 255
    # Teacher forcing: input n is the decoded class of target n - 1.
    from models.vocoder.mulaw import mulaw_decode

    np.testing.assert_array_equal(inputs[:, 1:, 0], mulaw_decode(target[:, :-1]))
    # The last two columns are the sine source the tones' mel gives (they are voiced throughout).
    assert np.all(np.abs(inputs[:, :, 3:]).max(axis=1) > 0.9)


def test_crops_carry_the_source_locked_to_the_recording(corpus: Path) -> None:
    """A crop's sine source has generation's pitch and voicing (excitation.frame_source, what the
    runtime feeds the kernel), shifted onto the recording's own fundamental."""
    import soundfile as sf

    from models.vocoder.excitation import frame_source

    c = corpus_mod.Corpus(corpus, "train", TINY)
    c.refresh()
    hop = TINY.hop_length
    for u in c.utterances[:3]:
        mel = np.load(corpus / "mel" / f"{u.id}.npy")
        audio = sf.read(corpus / "wav" / f"{u.id}.wav", dtype="float32")[0]
        whole = frame_source(mel, TINY)
        first, frames = 1, u.usable_frames - 1
        crop = u.source(first, frames, TINY)
        span = slice(first * hop, (first + frames) * hop)
        np.testing.assert_allclose(np.hypot(*crop.T), np.hypot(*whole[span].T), atol=1e-5)
        # the tones' fundamental dominates them, and the locked sine follows it (the tones start
        # at phase 0 like the source, so here the free one happens to be near it too; the offset
        # itself is tested in tests/models/dsp/test_pitch.py)
        assert np.corrcoef(crop[:, 0], audio[span])[0, 1] > 0.7


def test_lpc_corpus_targets_the_excitation(corpus: Path) -> None:
    """With LPC the targets are the classes of e = s - p, and input n is p + decoded e of n - 1."""
    import dataclasses

    from models.vocoder.mulaw import mulaw_decode

    config = dataclasses.replace(TINY, lpc_order=8)
    plain, lpc = (
        corpus_mod.Corpus(corpus, "train", TINY),
        corpus_mod.Corpus(corpus, "train", config),
    )
    plain.refresh(), lpc.refresh()
    u, v = plain.utterances[0], lpc.utterances[0]
    assert v.classes.shape == u.classes.shape and not np.array_equal(v.classes, u.classes)
    # the excitation of a predictable (tonal) signal is far smaller than the signal itself
    assert np.abs(mulaw_decode(v.classes)).mean() < 0.5 * np.abs(mulaw_decode(u.classes)).mean()
    # generation's inputs track the true signal either way (within mu-law resolution)
    assert np.abs(v.inputs[:, 0] - u.inputs[:, 0]).max() < 0.05


def test_input_noise_bends_the_past_of_lpc_corpora_only(corpus: Path) -> None:
    import dataclasses

    config = dataclasses.replace(TINY, lpc_order=8)
    clean, noisy, again = (
        corpus_mod.Corpus(corpus, "train", config, input_noise=n) for n in (0.0, 6.0, 6.0)
    )
    for c in (clean, noisy, again):
        c.refresh()
    bent = [np.abs(u.inputs - v.inputs).mean() for u, v in zip(clean.utterances, noisy.utterances)]
    assert max(bent) > 1e-4  # the noisy past differs from the clean one...
    for u, v in zip(noisy.utterances, again.utterances):  # ...the same way on every load (resume)
        assert np.array_equal(u.inputs, v.inputs) and np.array_equal(u.classes, v.classes)
    # Ringing slips bend it further, the same way on every load too.
    ringing, ringing_again = (
        corpus_mod.Corpus(corpus, "train", config, input_noise=6.0, input_ring=0.95)
        for _ in range(2)
    )
    ringing.refresh(), ringing_again.refresh()
    rung = [
        np.abs(u.inputs - v.inputs).mean() for u, v in zip(clean.utterances, ringing.utterances)
    ]
    assert np.mean(rung) > np.mean(bent)
    for u, v in zip(ringing.utterances, ringing_again.utterances):
        assert np.array_equal(u.inputs, v.inputs) and np.array_equal(u.classes, v.classes)
    # A plain (non-LPC) corpus has no prediction to bend: the option changes nothing.
    plain, plain_noisy = (
        corpus_mod.Corpus(corpus, "train", TINY, input_noise=n) for n in (0.0, 6.0)
    )
    plain.refresh(), plain_noisy.refresh()
    for u, v in zip(plain.utterances, plain_noisy.utterances):
        assert np.array_equal(u.inputs, v.inputs) and np.array_equal(u.classes, v.classes)


def test_missing_corpus_is_a_clear_error(tmp_path: Path) -> None:
    args = parse(
        "--tiny", "--steps", "1", "--corpus", str(tmp_path / "nope"), "--run-dir", str(tmp_path)
    )
    assert cli_mod.run(args) == 1


def test_cubic_schedule() -> None:
    d = [pruning_mod.cubic_density(p, 0.1, 0.2, 0.6) for p in np.linspace(0, 1, 51)]
    assert d[0] == 1.0 and d[10] == 1.0 and d[-1] == pytest.approx(0.1)
    assert d[30] == pytest.approx(0.1)  # target reached at the end step and held
    assert all(a >= b for a, b in itertools.pairwise(d))  # never grows back


def test_training_reduces_loss_and_exports_sparse_weights(corpus: Path, tmp_path: Path) -> None:
    run_dir, out = tmp_path / "runs", tmp_path / "export"
    args = parse(
        "--tiny",
        "--corpus",
        str(corpus),
        "--run-dir",
        str(run_dir),
        "--name",
        "t",
        "--steps",
        "60",
        "--batch",
        "8",
        "--crop-frames",
        "2",
        "--lr",
        "3e-3",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--prune-start",
        "0.2",
        "--prune-end",
        "0.6",
        "--prune-every",
        "5",
        "--export",
        str(out),
        "--log-seconds",
        "1000",
    )
    held = corpus_mod.Corpus(corpus, "test", TINY)
    held.refresh()
    batch = corpus_mod.sample_batch(held.utterances, TINY, 8, 2, np.random.default_rng(7))
    torch.manual_seed(args.seed)  # the same initial model the run starts from
    before = train_mod.evaluate_loss(wavernn_mod.WaveRNN(TINY), batch, bf16=False)
    assert cli_mod.run(args) == 0

    state = checkpoint_mod.load_checkpoint(run_dir / "t")
    assert state["step"] == 60
    model, _ = checkpoint_mod.model_from_checkpoint(state)
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
    common = (*tiny_run_args(corpus, tmp_path), "--name", "r")
    assert cli_mod.run(parse(*common, "--steps", "3")) == 0
    assert cli_mod.run(parse(*common, "--steps", "5", "--resume")) == 0
    assert checkpoint_mod.load_checkpoint(tmp_path / "r")["step"] == 5
    small = tmp_path / "small.pt"
    assert (
        cli_mod.run(
            parse(
                *common,
                "--steps",
                "0",
                "--resume",
                "--export",
                str(tmp_path / "e"),
                "--save-small",
                str(small),
            )
        )
        == 0
    )
    assert (tmp_path / "e" / "weights.npz").exists()
    # The compact checkpoint resumes too (fresh optimizer moments).
    assert cli_mod.run(parse(*common, "--steps", "6", "--resume", str(small), "--name", "r2")) == 0
    assert checkpoint_mod.load_checkpoint(tmp_path / "r2")["step"] == 6
    # Resuming with another pre-emphasis fine-tunes into that target domain; the export says so.
    assert TINY.preemphasis != 0.5
    args = parse(
        *common, "--steps", "7", "--resume", str(small), "--name", "r3", "--preemphasis", "0.5"
    )
    args.export = str(tmp_path / "e3")
    assert cli_mod.run(args) == 0
    assert VocoderConfig.load(tmp_path / "e3" / "config.json").preemphasis == 0.5
    # The same for linear prediction: the net goes on, now predicting the LPC excitation.
    args = parse(
        *common,
        "--steps",
        "7",
        "--resume",
        str(small),
        "--name",
        "r4",
        "--lpc-order",
        "8",
        "--input-noise",
        "3",
    )
    args.export = str(tmp_path / "e4")
    assert cli_mod.run(args) == 0
    assert VocoderConfig.load(tmp_path / "e4" / "config.json").lpc_order == 8
    # And for the LPC fit's noise floor.
    args = parse(
        *common, "--steps", "7", "--resume", str(small), "--name", "r5", "--lpc-noise-floor", "0.01"
    )
    args.export = str(tmp_path / "e5")
    assert cli_mod.run(args) == 0
    assert VocoderConfig.load(tmp_path / "e5" / "config.json").lpc_noise_floor == 0.01
    # Noise injection is a training setting the checkpoint carries: a plain resume keeps it,
    # an explicit flag overrides it.
    assert checkpoint_mod.load_checkpoint(tmp_path / "r4")["args"]["input_noise"] == 3
    assert cli_mod.run(parse(*common, "--steps", "8", "--resume", "--name", "r4")) == 0
    assert checkpoint_mod.load_checkpoint(tmp_path / "r4")["args"]["input_noise"] == 3
    args = parse(*common, "--steps", "9", "--resume", "--name", "r4", "--input-noise", "0")
    assert cli_mod.run(args) == 0
    assert checkpoint_mod.load_checkpoint(tmp_path / "r4")["args"]["input_noise"] == 0
    # So is the slips' ringing.
    args = parse(
        *common,
        "--steps",
        "10",
        "--resume",
        "--name",
        "r4",
        "--input-noise",
        "2",
        "--input-ring",
        "0.9",
    )
    assert cli_mod.run(args) == 0
    assert cli_mod.run(parse(*common, "--steps", "11", "--resume", "--name", "r4")) == 0
    assert checkpoint_mod.load_checkpoint(tmp_path / "r4")["args"]["input_ring"] == 0.9


def test_lr_cycle_restarts_the_learning_rate_of_a_resumed_run(corpus: Path, tmp_path: Path) -> None:
    common = (
        *tiny_run_args(corpus, tmp_path),
        "--log-seconds",  # a history entry every step (the last --log-seconds given counts)
        "0",
        "--warmup",
        "1",
        "--prune-start",
        "0.1",
        "--prune-end",
        "0.5",
        "--prune-every",
        "2",
    )
    assert cli_mod.run(parse(*common, "--name", "a", "--steps", "20")) == 0
    first = checkpoint_mod.load_checkpoint(tmp_path / "a")
    checkpoint_mod.save_checkpoint(tmp_path / "b" / checkpoint_mod.CHECKPOINT, first)

    # Going on with the run's own schedule: 2/3 of the way through its cosine already.
    assert cli_mod.run(parse(*common, "--name", "a", "--steps", "30", "--resume")) == 0
    plain = [e["lr"] for e in checkpoint_mod.load_checkpoint(tmp_path / "a")["history"][20:]]
    # A cycle of its own: from the peak down to the final rate over these 10 steps.
    assert (
        cli_mod.run(parse(*common, "--name", "b", "--steps", "30", "--resume", "--lr-cycle")) == 0
    )
    state = checkpoint_mod.load_checkpoint(tmp_path / "b")
    cycled = [e["lr"] for e in state["history"][20:]]
    assert len(plain) == len(cycled) == 10
    assert plain[0] < 0.3 * 3e-3
    assert cycled[0] == pytest.approx(3e-3)
    assert cycled[-1] < 0.05 * 3e-3
    assert all(a >= b for a, b in itertools.pairwise(cycled))
    # Pruning is not restarted: the masks stay at the run's target density.
    assert state["step"] == 30
    assert state["history"][-1]["density"] == pytest.approx(TINY.density, abs=0.02)


def test_resume_grows_the_masks_and_keeps_what_the_net_computes(
    corpus: Path, tmp_path: Path
) -> None:
    common = tiny_run_args(corpus, tmp_path)
    # A run pruned to TINY's density within its 6 steps.
    args = parse(
        *common,
        "--name",
        "g",
        "--steps",
        "6",
        "--prune-start",
        "0",
        "--prune-end",
        "0.3",
        "--prune-every",
        "1",
    )
    assert cli_mod.run(args) == 0
    state = checkpoint_mod.load_checkpoint(tmp_path / "g")
    assert state["pruner"]["density"] == TINY.density
    model, config = checkpoint_mod.model_from_checkpoint(state)
    held = corpus_mod.Corpus(corpus, "test", config)
    held.refresh()
    batch = corpus_mod.sample_batch(held.utterances, config, 4, 1, np.random.default_rng(3))

    # Growth alone: more blocks in every mask (the old ones all kept), the net unchanged.
    pruner = pruning_mod.Pruner(model, config)
    pruner.load_state_dict(state["pruner"])
    old_masks = {k: m.clone() for k, m in pruner.masks.items()}
    logits = model(*(torch.from_numpy(a) for a in batch[:2])).detach()
    scores = train_mod.gradient_scores(model, [batch], bf16=False)
    assert all(np.abs(scores[k] * (1 - old_masks[k].numpy())).max() > 0 for k in scores)
    pruner.grow(0.5, scores)
    for k, m in pruner.masks.items():
        assert torch.all(m >= old_masks[k]) and float(m.mean()) == pytest.approx(0.5)
    assert torch.equal(model(*(torch.from_numpy(a) for a in batch[:2])).detach(), logits)

    # Through the CLI: the run goes on at the new density, and the export keeps that many blocks.
    out = tmp_path / "e"
    args = parse(
        *common,
        "--name",
        "g",
        "--steps",
        "9",
        "--resume",
        "--grow-density",
        "0.5",
        "--export",
        str(out),
    )
    assert cli_mod.run(args) == 0
    state = checkpoint_mod.load_checkpoint(tmp_path / "g")
    assert state["step"] == 9 and state["pruner"]["density"] == 0.5
    assert VocoderConfig.from_dict(state["config"]).density == 0.5
    assert VocoderConfig.load(out / "config.json").density == 0.5
    weights = dict(np.load(out / "weights.npz"))
    for name in SPARSE_WEIGHTS:
        norms = block_norms(weights[name], (TINY.block_rows, TINY.block_cols))
        assert np.count_nonzero(norms) == round(norms.size * 0.5), name
    # A plain resume stays there; growing to the density it has, or without a run, is refused.
    assert cli_mod.run(parse(*common, "--name", "g", "--steps", "10", "--resume")) == 0
    assert checkpoint_mod.load_checkpoint(tmp_path / "g")["pruner"]["density"] == 0.5
    assert (
        cli_mod.run(
            parse(*common, "--name", "g", "--steps", "11", "--resume", "--grow-density", "0.5")
        )
        == 1
    )
    assert cli_mod.run(parse(*common, "--name", "h", "--steps", "1", "--grow-density", "0.5")) == 1
    # So is growing a run still on its way down to its density (here: not pruned at all yet).
    assert cli_mod.run(parse(*common, "--name", "p", "--steps", "2")) == 0
    assert checkpoint_mod.load_checkpoint(tmp_path / "p")["pruner"]["density"] == 1.0
    assert (
        cli_mod.run(
            parse(*common, "--name", "p", "--steps", "3", "--resume", "--grow-density", "0.5")
        )
        == 1
    )


@pytest.mark.parametrize("gamma", ["1", "-0.1", "1.5"])
def test_input_ring_outside_0_1_is_a_usage_error(
    gamma: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse("--input-ring", gamma)
    assert exc.value.code == 2
    assert "--input-ring" in capsys.readouterr().err


def test_precision_auto_uses_bf16_only_with_native_support() -> None:
    from models.kernel.isa import cpu_flags

    assert train_mod.use_bf16("bf16") and not train_mod.use_bf16("fp32")
    assert train_mod.use_bf16("auto") == bool(cpu_flags() & train_mod.NATIVE_BF16_FLAGS)


def test_tiny_synthetic_smoke_run(tmp_path: Path) -> None:
    """`sparrow train --tiny --synthetic --steps N` needs no corpus at all."""
    args = parse(
        "--tiny",
        "--synthetic",
        "--steps",
        "2",
        "--batch",
        "2",
        "--crop-frames",
        "1",
        "--threads",
        "1",
        "--run-dir",
        str(tmp_path),
        "--name",
        "s",
        "--corpus",
        str(tmp_path / "none"),
    )
    assert cli_mod.run(args) == 0
    assert (tmp_path / "s" / "synthetic-corpus" / "metadata.csv").exists()
    assert checkpoint_mod.load_checkpoint(tmp_path / "s")["step"] == 2
