"""The torch training model computes the numpy reference's math (shapes, weights, logits)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.dsp.features import SPEC, log_mel
from models.train.wavernn import (
    WaveRNN,
    from_reference_weights,
    to_reference_weights,
)
from models.vocoder.conditioning import pad_mel
from models.vocoder.config import TINY, VocoderConfig
from models.vocoder.excitation import excitation_targets, frame_lpc, frame_source
from models.vocoder.mulaw import preemphasize
from models.vocoder.params import WEIGHT_SHAPES, random_weights
from models.vocoder.reference import teacher_forced_logits

CONFIG = VocoderConfig(
    hidden_size=64, fc_size=48, cond_hidden=32, cond_size=16, density=0.25, hop_length=40
)


def _inputs(config: VocoderConfig, frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A voiced tone (15 harmonics of ~150-200 Hz) and its mel: the sine source is on."""
    rng = np.random.default_rng(seed)
    # long enough for the mel contract's hop too (the test config's hop is shorter)
    t = np.arange(frames * max(config.hop_length, SPEC.hop_length)) / config.sample_rate
    phase = 2 * np.pi * (150 + 50 * rng.random()) * t
    audio = sum(0.2 / k * np.sin(k * phase) for k in range(1, 16)) + 0.02 * rng.normal(size=t.size)
    audio = np.clip(audio, -1, 1).astype(np.float32)
    mel = log_mel(audio)[:frames]
    assert np.abs(frame_source(mel, config)).max() > 0.9
    return mel, audio[: frames * config.hop_length]


def _torch_logits(model: WaveRNN, mel: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """Whole-utterance teacher forcing in torch, with the same edge handling as the reference."""
    padded = pad_mel(mel)
    # Inputs past the end of the audio only affect logits past the end, which callers drop.
    full = np.zeros(mel.shape[0] * model.config.hop_length, np.float32)
    full[: audio.size] = audio
    # Training's inputs: the pre-emphasised signal (see VocoderConfig.preemphasis), as generated.
    signal = preemphasize(full, model.config.preemphasis)
    _, inputs = excitation_targets(signal, frame_lpc(mel, model.config), model.config.hop_length)
    inputs = np.concatenate([inputs, frame_source(mel, model.config)], axis=1)
    with torch.no_grad():
        logits = model(
            torch.from_numpy(padded)[None], torch.from_numpy(inputs)[None], utterance_end=True
        )
    return logits[0].numpy()


def test_round_trip_keeps_exact_weights() -> None:
    w = random_weights(TINY, seed=3)
    back = to_reference_weights(from_reference_weights(w, TINY))
    assert set(back) == set(WEIGHT_SHAPES)
    for name, value in w.items():
        assert back[name].dtype == np.float32
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_malformed_weights_are_rejected() -> None:
    w = random_weights(TINY, seed=0)
    w["fc1.weight"] = w["fc1.weight"][:, :-1]
    with pytest.raises(ValueError, match="fc1.weight"):
        from_reference_weights(w, TINY)


@pytest.mark.parametrize("lpc_order", [0, 8], ids=["plain", "lpc"])
@pytest.mark.parametrize("seed", [0, 1])
def test_teacher_forced_logits_match_reference(seed: int, lpc_order: int) -> None:
    """Exact torch math vs the reference's fast exp/tanh: the kernel's approximations are
    harmless."""
    config = dataclasses.replace(CONFIG, lpc_order=lpc_order)
    w = random_weights(config, seed=seed)
    # Non-zero biases so every term of the formulas is exercised.
    rng = np.random.default_rng(seed + 10)
    for name in (
        "cond.conv1.bias",
        "cond.conv2.bias",
        "gru.b_ih",
        "gru.b_hh",
        "fc1.bias",
        "fc2.bias",
    ):
        w[name] = rng.normal(0, 0.3, size=w[name].shape).astype(np.float32)
    w["fc2.weight"] *= 4.0  # trained-model-sized logits (several units), not near-uniform ones
    mel, audio = _inputs(config, frames=4, seed=seed)
    audio = audio[: 3 * config.hop_length + 7]  # a partial last frame, like real utterances
    ref = teacher_forced_logits(w, config, mel, audio)
    got = _torch_logits(from_reference_weights(w, config), mel, audio)[: audio.size]
    assert ref.shape == got.shape == (audio.size, 256)
    scale = float(np.abs(ref).max())
    assert scale > 1.0  # the comparison is not between near-zero vectors
    np.testing.assert_allclose(got, ref, atol=2e-4 * scale, rtol=0)
    # Same argmax almost everywhere (ties aside): the distributions agree, not just the numbers.
    assert np.mean(got.argmax(1) == ref.argmax(1)) > 0.99


def test_a_different_model_gives_different_logits() -> None:
    """Guards the test above against comparing something trivially equal."""
    mel, audio = _inputs(CONFIG, frames=3, seed=0)
    ref = teacher_forced_logits(random_weights(CONFIG, seed=0), CONFIG, mel, audio)
    other = _torch_logits(
        from_reference_weights(random_weights(CONFIG, seed=1), CONFIG), mel, audio
    )
    assert np.abs(other - ref).max() > 0.1


@pytest.mark.parametrize("k", [1, 3], ids=["before-lpcnet-inputs", "before-sine-source"])
def test_checkpoints_from_before_newer_inputs_load_as_the_same_model(k: int) -> None:
    """Weights and training checkpoints saved when the GRU saw only the first k step inputs
    (kernel ABI < 7: the previous sample; ABI 7: no sine source) load with zero columns for the
    rest: the same function, ready to fine-tune."""
    from models.train.checkpoint import model_from_checkpoint, widen_moments
    from models.train.wavernn import N_INPUTS
    from models.vocoder.excitation import STEP_INPUTS
    from models.vocoder.params import upgrade_weights

    config = dataclasses.replace(CONFIG, lpc_order=8)
    w = random_weights(config, 3)
    newer = STEP_INPUTS[k:]
    for name in newer:
        w[name][:] = 0
    model = from_reference_weights(w, config)
    mel, audio = _inputs(config, 4, 3)
    want = _torch_logits(model, mel, audio)
    # the reference weights of an old export
    old = {name: v for name, v in w.items() if name not in newer}
    up = upgrade_weights(old)
    assert all(np.array_equal(up[name], w[name]) for name in w)
    # an old training checkpoint: GRU input matrix [3H, k + C], Adam moments of that shape
    state = model.state_dict()
    narrow = torch.cat(
        [state["gru.weight_ih_l0"][:, :k], state["gru.weight_ih_l0"][:, N_INPUTS:]], 1
    )
    assert narrow.shape == (3 * config.hidden_size, k + config.cond_size)
    old_state = {"config": config.to_dict(), "model": {**state, "gru.weight_ih_l0": narrow}}
    again, _ = model_from_checkpoint(old_state)
    np.testing.assert_array_equal(_torch_logits(again, mel, audio), want)
    opt = torch.optim.Adam(again.parameters())
    w_ih = again.gru.weight_ih_l0
    opt.state[w_ih] = {
        "step": torch.tensor(10.0),
        "exp_avg": torch.ones_like(narrow),
        "exp_avg_sq": torch.ones_like(narrow),
    }
    widen_moments(opt, again, config)
    m = opt.state[w_ih]["exp_avg"]
    assert (
        m.shape == w_ih.shape
        and not m[:, k:N_INPUTS].any()
        and m[:, :k].all()
        and m[:, N_INPUTS:].all()
    )
    # and the new columns learn: one step moves them off zero
    again(
        torch.from_numpy(pad_mel(mel))[None],
        torch.ones(1, 4 * config.hop_length, N_INPUTS),
        utterance_end=True,
    ).sum().backward()
    opt.step()
    assert w_ih[:, k:N_INPUTS].abs().sum() > 0
