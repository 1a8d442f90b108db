"""The torch training model computes the numpy reference's math (shapes, weights, logits)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.config import TINY, VocoderConfig
from models.reference import (
    WEIGHT_SHAPES,
    excitation_targets,
    frame_lpc,
    pad_mel,
    preemphasize,
    random_weights,
    teacher_forced_logits,
)
from models.wavernn import (
    WaveRNN,
    from_reference_weights,
    to_reference_weights,
)

CONFIG = VocoderConfig(
    hidden_size=64, fc_size=48, cond_hidden=32, cond_size=16, density=0.25, hop_length=40
)


def _inputs(config: VocoderConfig, frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mel = rng.normal(-5.0, 2.0, size=(frames, config.n_mels)).astype(np.float32)
    t = np.arange(frames * config.hop_length)
    audio = (0.4 * np.sin(0.07 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    return mel, np.clip(audio, -1, 1)


def _torch_logits(model: WaveRNN, mel: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """Whole-utterance teacher forcing in torch, with the same edge handling as the reference."""
    padded = pad_mel(mel)
    # Inputs past the end of the audio only affect logits past the end, which callers drop.
    full = np.zeros(mel.shape[0] * model.config.hop_length, np.float32)
    full[: audio.size] = audio
    # Training's inputs: the pre-emphasised signal (see VocoderConfig.preemphasis), as generated.
    signal = preemphasize(full, model.config.preemphasis)
    _, inputs = excitation_targets(signal, frame_lpc(mel, model.config), model.config.hop_length)
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
    """Exact torch math vs the reference's fast exp/tanh: the kernel's approximations are harmless."""
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


def test_checkpoints_from_before_the_lpcnet_inputs_load_as_the_same_model() -> None:
    """Weights and training checkpoints saved when the GRU saw only the previous sample (kernel
    ABI < 7) load with zero columns for p[n] and e[n-1]: the same function, ready to fine-tune."""
    from models.reference import upgrade_weights
    from models.train import _widen_moments, model_from_checkpoint
    from models.wavernn import N_INPUTS

    config = dataclasses.replace(CONFIG, lpc_order=8)
    w = random_weights(config, 3)
    w["gru.w_pred"][:] = 0
    w["gru.w_exc"][:] = 0
    model = from_reference_weights(w, config)
    mel, audio = _inputs(config, 4, 3)
    want = _torch_logits(model, mel, audio)
    # the reference weights of an old export: no w_pred / w_exc
    old = {k: v for k, v in w.items() if k not in ("gru.w_pred", "gru.w_exc")}
    up = upgrade_weights(old)
    assert all(np.array_equal(up[k], w[k]) for k in w)
    # an old training checkpoint: GRU input matrix [3H, 1 + C], Adam moments of that shape
    state = model.state_dict()
    narrow = torch.cat([state["gru.weight_ih_l0"][:, :1], state["gru.weight_ih_l0"][:, N_INPUTS:]], 1)
    assert narrow.shape == (3 * config.hidden_size, 1 + config.cond_size)
    old_state = {"config": config.to_dict(), "model": {**state, "gru.weight_ih_l0": narrow}}
    again, _ = model_from_checkpoint(old_state)
    np.testing.assert_array_equal(_torch_logits(again, mel, audio), want)
    opt = torch.optim.Adam(again.parameters())
    w_ih = again.gru.weight_ih_l0
    opt.state[w_ih] = {
        "step": torch.tensor(10.0), "exp_avg": torch.ones_like(narrow), "exp_avg_sq": torch.ones_like(narrow)
    }
    _widen_moments(opt, again, config)
    m = opt.state[w_ih]["exp_avg"]
    assert m.shape == w_ih.shape and not m[:, 1:N_INPUTS].any() and m[:, 0].all() and m[:, N_INPUTS:].all()
    # and the new columns learn: one step moves them off zero
    again(torch.from_numpy(pad_mel(mel))[None], torch.ones(1, 4 * config.hop_length, 3), utterance_end=True).sum().backward()
    opt.step()
    assert w_ih[:, 1:N_INPUTS].abs().sum() > 0
