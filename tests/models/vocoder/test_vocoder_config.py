"""NetConfig (compiled into the module) apart from SynthesisConfig (changed per server or
request)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from models.kernel.packing import pack_weights
from models.runtime import VocoderRuntime
from models.vocoder.config import (
    NET_FIELDS,
    SYNTHESIS_FIELDS,
    TINY,
    NetConfig,
    SynthesisConfig,
    VocoderConfig,
)
from models.vocoder.params import random_weights

SHIPPED = Path(__file__).resolve().parents[3] / "compiled" / "wavernn-slt" / "config.json"


def test_the_shipped_config_splits_into_net_and_synthesis_and_back() -> None:
    data = json.loads(SHIPPED.read_text())
    config = VocoderConfig.load(SHIPPED)
    assert set(data) == set(NET_FIELDS) | set(SYNTHESIS_FIELDS)  # one flat file, both halves
    assert not set(NET_FIELDS) & set(SYNTHESIS_FIELDS)
    assert config.synthesis.envelope_passes == data["envelope_passes"] > 0  # its defaults ship
    assert config.net.hidden_size == data["hidden_size"]
    assert VocoderConfig.compose(config.net, config.synthesis) == config
    assert config.to_dict() == data


def test_old_artefacts_without_newer_fields_still_load() -> None:
    data = json.loads(SHIPPED.read_text())
    for name in ("preemphasis", "lpc_noise_floor", "envelope_smoothing", "clip_retries"):
        data.pop(name)
    config = VocoderConfig.from_dict(data)
    assert config.preemphasis == 0.0 and config.lpc_noise_floor == 1e-4  # what they trained with
    assert config.envelope_smoothing == 0.0 and config.clip_retries == 0  # stages off


def test_synthesis_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown synthesis settings"):
        SynthesisConfig.from_dict({"envelope_pases": 2})
    with pytest.raises(AssertionError, match="logit scales"):
        SynthesisConfig(voiced_logit_scale=9.0)
    with pytest.raises(AssertionError, match="output_advance"):
        TINY.with_synthesis(SynthesisConfig(output_advance=TINY.hop_length + 1))
    assert SynthesisConfig.from_dict({"clip_retries": 2}).clip_retries == 2


def test_synthesis_settings_do_not_reach_the_module(tiny_model_dir: Path) -> None:
    """The kernel is specialised on the net alone: other synthesis settings give the same kernel
    shape, and a runtime with them shares the loaded module and packed weights."""
    w = random_weights(TINY, 0)
    other = TINY.with_synthesis(
        SynthesisConfig(pitch_postfilter=0.5, envelope_passes=2, clip_retries=3)
    )
    assert other.net == TINY.net and other.synthesis != TINY.synthesis
    shape, args = pack_weights(w, TINY)
    other_shape, other_args = pack_weights(w, other)
    assert shape == other_shape and isinstance(shape.config, NetConfig)
    assert not isinstance(shape.config, SynthesisConfig)
    assert all((a == b).all() for a, b in zip(args, other_args, strict=True))
    rt = VocoderRuntime.load(tiny_model_dir)
    rt2 = rt.with_synthesis(other.synthesis)
    assert rt2.config == other and rt.config == TINY  # the original keeps its settings
    assert rt2._module is rt._module and rt2._weight_args is rt._weight_args
    assert dataclasses.replace(rt2.config, **TINY.synthesis.to_dict()) == TINY
