"""Vocoder configuration: the net's shape, fixed when it is compiled, apart from the synthesis
settings a server or a request may change without recompiling (as Piper's voice config and its
SynthesisConfig).

    NetConfig        what the weights and the compiled module are specialised on
    SynthesisConfig  what the stream does around the kernel: sampling temperature, redraws,
                     postfilter, output advance, envelope correction
    VocoderConfig    both, flat: what config.json next to every artefact holds (the synthesis
                     fields there are the voice's defaults); `.net`, `.synthesis`,
                     `.with_synthesis(s)`

All three are frozen; every field says in one line why its value is what it is.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.dsp.features import SPEC
from models.dsp.lpc import NOISE_FLOOR

MAX_CLIP_RETRIES = 8  # each redraw costs a frame's compute: beyond a few, real time is at risk


@dataclass(frozen=True)
class NetConfig:
    """The net's shape and signal domain: changing any of these means new weights or a new .so."""

    # Audio contract (models/dsp/features.py): 24 kHz, one mel frame every 12.5 ms.
    sample_rate: int = SPEC.sample_rate
    hop_length: int = SPEC.hop_length  # samples per mel frame = samples per kernel call
    n_mels: int = SPEC.n_mels

    # Conditioning network (numpy, once per frame): two k=3 convolutions over the mel frames.
    # k=3 gives each layer one frame of look-ahead; it is cheap (~1% of the per-sample cost).
    cond_hidden: int = 256
    cond_size: int = 128
    # Log-mel is shifted/scaled to roughly unit range before the first convolution.
    mel_mean: float = -5.0
    mel_std: float = 2.5

    # Autoregressive core: GRU(H) -> FC(F) ReLU -> FC(256) softmax over 8-bit mu-law.
    hidden_size: int = 512  # H=512: the sparse int8 weights still fit in L2
    fc_size: int = 512
    n_classes: int = 256  # 8-bit mu-law
    # The net models the pre-emphasised signal x[n] - p x[n-1] and the output is de-emphasised
    # (1 / (1 - p z^-1)), as LPCNet does: the white noise of 8-bit mu-law sampling is then shaped
    # like speech, low at high frequencies. Measured on the corpus: mu-law quantisation alone costs
    # 6.1 dB of log-spectral distance without it and 2.8 dB with p = 0.85. 0 turns it off.
    preemphasis: float = 0.85
    # Linear prediction (LPCNet): with P > 0 the net predicts the excitation e[n] = s[n] - p[n] of
    # the pre-emphasised signal s, where p[n] = -sum_i a_i s[n - i] uses the frame's P-pole filter
    # fitted to its mel (models/dsp/lpc.py); the sample is p[n] + e[n]. The spectral envelope then
    # comes from the features and the sampling noise is shaped like it. 0 turns it off.
    lpc_order: int = 0
    # White-noise correction of the LPC fit (models/dsp/lpc.NOISE_FLOOR says why 1e-3).
    lpc_noise_floor: float = NOISE_FLOOR

    # Block sparsity of W_hh, FC1 and FC2 (FC2 dense measured ~1.8x slower per sample).
    density: float = 0.10
    # 16 x 4 blocks: 16 rows fill one AVX-512 register of int32 lanes, and 4 columns are what one
    # VNNI dot-product instruction (vpdpbusd) sums per lane. LPCNet uses 8 x 4 for its AVX2 kernels.
    block_rows: int = 16
    block_cols: int = 4
    # Sparse weight storage in the kernel: "int8" (per-row scales, with activations quantised to
    # 8 bits per step so the products run as integer dot products: measured ~2x faster than
    # float32 with VNNI, and exact integer sums on every ISA). The only kind the kernel compiles;
    # the field stays so artefacts say what they hold.
    weight_dtype: str = "int8"

    def __post_init__(self) -> None:
        assert self.n_classes == 256, "the sampler and mu-law tables assume 8-bit mu-law"
        assert 0.0 < self.density <= 1.0
        for rows in (3 * self.hidden_size, self.fc_size, self.n_classes):
            assert rows % self.block_rows == 0, "block rows must divide every sparse matrix"
        for cols in (self.hidden_size, self.fc_size):
            assert cols % self.block_cols == 0
        assert self.weight_dtype == "int8", "the kernel stores sparse weights as int8"
        assert self.hop_length > 0 and self.sample_rate > 0
        assert 0.0 <= self.preemphasis < 1.0
        assert 0 <= self.lpc_order <= 32
        assert 0.0 <= self.lpc_noise_floor < 1.0

    @property
    def frame_seconds(self) -> float:
        return self.hop_length / self.sample_rate


@dataclass(frozen=True)
class SynthesisConfig:
    """What a stream does around the kernel; none of it reaches the compiled module, so a server
    setting or a request may change it. The defaults turn every stage off."""

    # Strength g of the pitch postfilter on the output (models/dsp/postfilter.py): a one-tap comb
    # at the mel's pitch, weighted by its voicing, that takes noise out from between the
    # harmonics. Training never sees it; 0 turns it off.
    pitch_postfilter: float = 0.0
    # Upper edge (Hz) of the band the pitch postfilter works in; 0 is the whole band. The HTS
    # voice is harmonic below ~4 kHz and noise above even when voiced, where combing costs more
    # log-spectral distance than the harmonics below gain. Above 0 the comb's correction goes
    # through a short linear-phase lowpass, which delays the output by POSTFILTER_DELAY samples.
    pitch_postfilter_cutoff_hz: float = 0.0
    # Samples the output is moved earlier by, up to one frame (the stream then computes one frame
    # ahead; the last samples of an utterance are the postfilter's tail). The net's onsets come
    # ~3 ms after the original's; moving them back lowers the held-out log-spectral distance.
    output_advance: int = 0
    # Passes of the envelope correction on the output (models/dsp/envelope.py): each measures the
    # output's log-mel against the mel asked for and applies the difference, clipped to
    # +-envelope_clip (natural log), as a gain that follows the mel bands; the net's harmonics
    # and noise stay as drawn. Each pass needs 1,200 samples (4 frames) of look-ahead, which a
    # stream computes ahead of its output. 0 turns it off.
    envelope_passes: int = 0
    envelope_clip: float = 1.5
    # Share, in [0, 1], of the way each pass also moves the bins from envelope_smoothing_hz up to
    # a smooth level (their mel band's, at a noise's power): there the voice is mostly noise, and
    # a drawn noise's per-bin scatter only adds distance. Harmonics below stay as drawn. 0: off.
    envelope_smoothing: float = 0.0
    envelope_smoothing_hz: float = 4000.0
    # Redraws of a frame whose output reaches full scale: the stream restores the state from
    # before the frame and samples it again with fresh uniforms, up to this many times (the last
    # draw stands), within a per-stream budget (chain.may_redraw). A trained voice rarely comes
    # near full scale, but now and then its sampling locks onto a run of one-signed excitation
    # that the de-emphasis integrates into a 10-30 ms full-scale thump, which a fresh draw of the
    # frame where it starts avoids. 0 turns it off (a random model clips every frame, so there it
    # only multiplies the cost).
    clip_retries: int = 0
    # Voicing-dependent sampling temperature, as LPCNet lowers it in voiced speech: frame f's
    # logits are multiplied by unvoiced_logit_scale + (voiced_logit_scale - unvoiced_logit_scale)
    # * v_f, v_f its voicing in [0, 1] from the mel (models/dsp/pitch.py). The export already baked
    # a temperature T into FC2, so a scale s samples the frame at temperature T / s: sharper voiced
    # frames keep the harmonics clean, unvoiced frames want the full noise. 1.0 and 1.0: off.
    voiced_logit_scale: float = 1.0
    unvoiced_logit_scale: float = 1.0

    def __post_init__(self) -> None:
        nyquist = SPEC.sample_rate / 2
        assert 0.0 <= self.pitch_postfilter <= 1.0, "the pitch postfilter's strength is in [0, 1]"
        assert 0.0 <= self.pitch_postfilter_cutoff_hz < nyquist, "cutoff in [0, Nyquist)"
        assert self.output_advance >= 0, "output_advance is in [0, hop_length]"
        assert 0 <= self.envelope_passes <= 4, "envelope_passes is in [0, 4]"
        assert 0.0 < self.envelope_clip <= 5.0, "envelope_clip is in (0, 5]"
        assert 0.0 <= self.envelope_smoothing <= 1.0, "envelope_smoothing is in [0, 1]"
        assert 0.0 <= self.envelope_smoothing_hz < nyquist, "smoothing from [0, Nyquist)"
        assert 0 <= self.clip_retries <= MAX_CLIP_RETRIES, (
            f"clip_retries is in [0, {MAX_CLIP_RETRIES}]"
        )
        for scale in (self.voiced_logit_scale, self.unvoiced_logit_scale):
            assert 0.25 <= scale <= 4.0, "logit scales are in [0.25, 4]"

    @property
    def voicing_temperature(self) -> bool:
        """Whether frames are sampled at a voicing-dependent temperature (the logit scales)."""
        return self.voiced_logit_scale != 1.0 or self.unvoiced_logit_scale != 1.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthesisConfig:
        """Settings by field name; unknown names are an error (a typo must not pass silently)."""
        return cls(**known_fields(cls, data, "synthesis settings"))

    def updated(self, changes: dict[str, Any]) -> SynthesisConfig:
        """These settings with `changes` (by field name) over them: a partial override such as
        SPARROW_SYNTHESIS. ValueError for an unknown name, AssertionError for a value out of
        range."""
        return SynthesisConfig.from_dict({**self.to_dict(), **changes})


def known_fields(cls: type, data: dict[str, Any], what: str) -> dict[str, Any]:
    """`data` if every key is a field of the dataclass `cls`; a ValueError naming the others."""
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what}: {sorted(unknown)}")
    return data


NET_FIELDS = tuple(f.name for f in dataclasses.fields(NetConfig))
SYNTHESIS_FIELDS = tuple(f.name for f in dataclasses.fields(SynthesisConfig))


@dataclass(frozen=True)
class VocoderConfig(SynthesisConfig, NetConfig):
    """A voice: its net (NetConfig) and its default synthesis settings (SynthesisConfig), flat, as
    config.json holds them."""

    def __post_init__(self) -> None:
        NetConfig.__post_init__(self)
        SynthesisConfig.__post_init__(self)
        assert self.output_advance <= self.hop_length, "output_advance is in [0, hop_length]"
        nyquist = self.sample_rate / 2
        assert self.pitch_postfilter_cutoff_hz < nyquist, "cutoff in [0, Nyquist)"
        assert self.envelope_smoothing_hz < nyquist, "smoothing from [0, Nyquist)"

    @property
    def net(self) -> NetConfig:
        return NetConfig(**{k: getattr(self, k) for k in NET_FIELDS})

    @property
    def synthesis(self) -> SynthesisConfig:
        return SynthesisConfig(**{k: getattr(self, k) for k in SYNTHESIS_FIELDS})

    def with_synthesis(self, synthesis: SynthesisConfig) -> VocoderConfig:
        """The same net with other synthesis settings (no recompiling: the module is the net's)."""
        return dataclasses.replace(self, **synthesis.to_dict())

    @classmethod
    def compose(cls, net: NetConfig, synthesis: SynthesisConfig) -> VocoderConfig:
        return cls(**dataclasses.asdict(net), **synthesis.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VocoderConfig:
        data = known_fields(cls, data, "VocoderConfig fields")
        # Artefacts and checkpoints written before a field existed keep what they were trained
        # with: the plain signal (no pre-emphasis), and the LPC fit's first noise floor.
        return cls(**{"preemphasis": 0.0, "lpc_noise_floor": 1e-4, **data})

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> VocoderConfig:
        return cls.from_dict(json.loads(path.read_text()))


TINY = VocoderConfig(hidden_size=64, fc_size=64, cond_hidden=32, cond_size=16, density=0.25)
"""A small real model for tests: same code paths, compiles and runs in a fraction of a second."""
