"""The tiny test net with the shipped voice's whole post-kernel chain (LPC, pitch postfilter,
output advance, envelope passes, voicing temperature and redraws: the tiny random net clips), for
tests that run every stage of a stream on a net that compiles in seconds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from models.vocoder.config import VocoderConfig

SHIPPED = json.loads(
    (Path(__file__).resolve().parents[2] / "compiled" / "wavernn-slt" / "config.json").read_text()
)
CHAIN_FIELDS = (
    "lpc_order",
    "pitch_postfilter",
    "output_advance",
    "envelope_passes",
    "envelope_smoothing",
    "clip_retries",
    "voiced_logit_scale",
    "unvoiced_logit_scale",
)


def with_shipped_chain(config: VocoderConfig) -> VocoderConfig:
    """`config` with the shipped voice's values of CHAIN_FIELDS."""
    return dataclasses.replace(config, **{k: SHIPPED[k] for k in CHAIN_FIELDS})
