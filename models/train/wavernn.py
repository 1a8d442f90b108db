"""Torch twin of the numpy reference (models/vocoder/reference.py), for teacher-forced training.

Same shapes and the same math as the reference, with exact exp/tanh instead of the kernel's fast
approximations (tests/models/train/test_wavernn.py checks the two agree). torch is imported only
here
and in models/train/train.py: the server never imports this module.

Shapes: B = batch, N = mel frames, T = hop_length, L = N * T samples, H/F/C as in VocoderConfig.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.vocoder.config import VocoderConfig
from models.vocoder.excitation import SIGNAL_INPUTS, STEP_INPUTS
from models.vocoder.params import SPARSE_WEIGHTS, WEIGHT_SHAPES, check_weights


class CondNet(nn.Module):
    """Log-mel -> conditioning: two 'valid' k=3 convolutions, ReLU then tanh
    (conditioning.condition)."""

    def __init__(self, config: VocoderConfig) -> None:
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv1d(config.n_mels, config.cond_hidden, 3)
        self.conv2 = nn.Conv1d(config.cond_hidden, config.cond_size, 3)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, N + 4, n_mels] (already edge-padded by 2 frames each side) -> [B, N, C]."""
        x = (mel - self.config.mel_mean) / self.config.mel_std
        h = F.relu(self.conv1(x.transpose(1, 2)))
        return torch.tanh(self.conv2(h)).transpose(1, 2)


def interpolate_cond(cond: torch.Tensor, hop: int) -> torch.Tensor:
    """Per-sample conditioning: cond [B, N + 1, C] -> [B, N * hop, C].

    Sample t of frame f gets (1 - a) * cond[f] + a * cond[f + 1] with a = t / hop, as in
    reference.run_frame (the caller supplies the extra frame; at an utterance end it repeats).
    """
    a = torch.arange(hop, dtype=cond.dtype, device=cond.device) / hop  # [T]
    left, right = cond[:, :-1, None, :], cond[:, 1:, None, :]  # [B, N, 1, C]
    out = left + a[None, None, :, None] * (right - left)  # [B, N, T, C]
    return out.reshape(cond.shape[0], -1, cond.shape[-1])


SAMPLE_GAIN = 32.0
"""Training-only reparametrisation of the signal inputs: the GRU sees SAMPLE_GAIN * x (likewise p
and e; the sine source has SOURCE_GAIN) and each weight column holds w / SAMPLE_GAIN
(exported multiplied back, so the math is unchanged).
Speech samples are small (mean |x| ~ 0.04), so with the plain parametrisation Adam's per-parameter
step grows w_sample far too slowly and the loss stalls near the marginal entropy; a power of two
keeps the export round trip exact."""


SOURCE_GAIN = 4.0
"""The same reparametrisation for the sine source (amplitude <= 1): its columns start at zero when
a checkpoint from before the source is fine-tuned, and a gain above 1 lets Adam move them faster
than the rest of the net, which is already trained."""

N_INPUTS = len(STEP_INPUTS)


def input_gains(sample_gain: float) -> list[float]:
    """The training gain of each step input column (sample_gain on the signal inputs,
    SOURCE_GAIN on the sine source)."""
    return [sample_gain if k in SIGNAL_INPUTS else SOURCE_GAIN for k in STEP_INPUTS]


def widen_input_columns(w_ih: torch.Tensor, cond_size: int) -> torch.Tensor:
    """A GRU input matrix (or its Adam moments) from before some step inputs existed: [3H, k + C]
    with the first k of STEP_INPUTS (1: before p[n] and e[n-1], 3: before the sine source), with
    zero columns for the rest: the same function, ready to learn to use them. Others unchanged."""
    k = w_ih.shape[1] - cond_size
    if not 0 < k < N_INPUTS:
        return w_ih
    zeros = w_ih.new_zeros(w_ih.shape[0], N_INPUTS - k)
    return torch.cat([w_ih[:, :k], zeros, w_ih[:, k:]], dim=1)


class WaveRNN(nn.Module):
    """Conditioning net + GRU(H) + FC(F) ReLU + FC(256) logits over 8-bit mu-law."""

    def __init__(self, config: VocoderConfig) -> None:
        super().__init__()
        self.config = config
        self.sample_gain = SAMPLE_GAIN
        self.cond = CondNet(config)
        # GRU input = [the step inputs (excitation.STEP_INPUTS), interpolated conditioning]; gate
        # order r,z,n and the b_hn-inside-r formula of nn.GRU are exactly the reference's.
        self.gru = nn.GRU(N_INPUTS + config.cond_size, config.hidden_size, batch_first=True)
        self.fc1 = nn.Linear(config.hidden_size, config.fc_size)
        self.fc2 = nn.Linear(config.fc_size, config.n_classes)

    def forward(
        self,
        mel: torch.Tensor,
        inputs: torch.Tensor,
        h0: torch.Tensor | None = None,
        *,
        utterance_end: bool = False,
    ) -> torch.Tensor:
        """Teacher-forced logits.

        mel:  [B, N + 5, n_mels] padded mel: rows f..f+4 give the conditioning of frame f, and the
              N + 1 conditioning frames cover the N frames generated plus the interpolation target.
        inputs: [B, N * T, 5] step inputs as generation makes them: previous sample, this step's
              linear prediction, previous decoded excitation (excitation.excitation_targets),
              then the sine source (excitation.frame_source).
        h0:   optional [B, H] initial GRU state (zeros by default).
        utterance_end: mel is [B, N + 4] and ends the utterance, so the last frame interpolates
              towards its own conditioning (reference.vocode) instead of a following frame's.
        returns [B, N * T, 256] float logits.
        """
        cond = self.cond(mel)
        if utterance_end:
            cond = torch.cat([cond, cond[:, -1:]], dim=1)
        cond = interpolate_cond(cond, self.config.hop_length)  # [B, L, C]
        gain = inputs.new_tensor(input_gains(self.sample_gain))
        x = (inputs * gain).to(cond.dtype)  # [B, L, 5]
        h, _ = self.gru(torch.cat([x, cond], dim=-1), None if h0 is None else h0[None])
        return self.fc2(F.relu(self.fc1(h)))

    def sparse_parameters(self) -> dict[str, nn.Parameter]:
        """The block-pruned matrices, keyed by their reference names."""
        return {
            "gru.w_hh": self.gru.weight_hh_l0,
            "fc1.weight": self.fc1.weight,
            "fc2.weight": self.fc2.weight,
        }


def to_reference_weights(model: WaveRNN) -> dict[str, np.ndarray]:
    """Export as the reference's float32 dict (exact keys and shapes of WEIGHT_SHAPES)."""

    def a(t: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(t.detach().float().cpu().numpy())

    w_ih = a(model.gru.weight_ih_l0)
    out = {
        "cond.conv1.weight": a(model.cond.conv1.weight),
        "cond.conv1.bias": a(model.cond.conv1.bias),
        "cond.conv2.weight": a(model.cond.conv2.weight),
        "cond.conv2.bias": a(model.cond.conv2.bias),
        **{
            k: np.ascontiguousarray(w_ih[:, i] * np.float32(gain))
            for i, (k, gain) in enumerate(
                zip(STEP_INPUTS, input_gains(model.sample_gain), strict=True)
            )
        },
        "gru.w_cond": np.ascontiguousarray(w_ih[:, N_INPUTS:]),
        "gru.b_ih": a(model.gru.bias_ih_l0),
        "gru.w_hh": a(model.gru.weight_hh_l0),
        "gru.b_hh": a(model.gru.bias_hh_l0),
        "fc1.weight": a(model.fc1.weight),
        "fc1.bias": a(model.fc1.bias),
        "fc2.weight": a(model.fc2.weight),
        "fc2.bias": a(model.fc2.bias),
    }
    assert set(out) == set(WEIGHT_SHAPES) and all(k in out for k in SPARSE_WEIGHTS)
    check_weights(out, model.config)
    return out


def from_reference_weights(weights: dict[str, np.ndarray], config: VocoderConfig) -> WaveRNN:
    """Build a model holding exactly the given reference weights (raises ValueError if
    malformed)."""
    check_weights(weights, config)
    model = WaveRNN(config)

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(weights[name], dtype=np.float32).copy())

    gains = input_gains(model.sample_gain)
    step = [t(k)[:, None] / gain for k, gain in zip(STEP_INPUTS, gains, strict=True)]
    w_ih = torch.cat([*step, t("gru.w_cond")], dim=1)
    with torch.no_grad():
        model.cond.conv1.weight.copy_(t("cond.conv1.weight"))
        model.cond.conv1.bias.copy_(t("cond.conv1.bias"))
        model.cond.conv2.weight.copy_(t("cond.conv2.weight"))
        model.cond.conv2.bias.copy_(t("cond.conv2.bias"))
        model.gru.weight_ih_l0.copy_(w_ih)
        model.gru.bias_ih_l0.copy_(t("gru.b_ih"))
        model.gru.weight_hh_l0.copy_(t("gru.w_hh"))
        model.gru.bias_hh_l0.copy_(t("gru.b_hh"))
        model.fc1.weight.copy_(t("fc1.weight"))
        model.fc1.bias.copy_(t("fc1.bias"))
        model.fc2.weight.copy_(t("fc2.weight"))
        model.fc2.bias.copy_(t("fc2.bias"))
    return model
