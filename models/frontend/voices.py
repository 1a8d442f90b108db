"""The voices and speeds the Festival front end accepts, and the errors it raises.

A voice is known here (`VOICES`) and installed when its files are under one of the Festival
voices roots (the Debian packages in DEBIAN_PACKAGES); models/frontend/festival_frontend.py finds
and drives them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from models.dsp import features

MIN_SPEED = 0.25  # OpenAI's range; see models/frontend/tempo.py for how each end is reached
MAX_SPEED = 4.0
DEBIAN_PACKAGES = "festival festvox-us-slt-hts"


class FrontendUnavailable(RuntimeError):
    """Festival or the requested voice is not installed on this machine."""


class FrontendError(RuntimeError):
    """Festival failed or timed out on a request."""


class FrontendInputError(ValueError):
    """A request the front end cannot serve because of its parameters (voice, speed, text)."""

    param: str | None = None
    """The request field at fault when a caller's name for it differs (e.g. OpenAI's `input`)."""


class FrontendBusy(FrontendError):
    """Every Festival process stayed busy for the whole timeout."""


class UnknownVoice(FrontendInputError):
    """The voice id is not one this front end knows."""


class InvalidSpeed(FrontendInputError):
    """The speed is outside [MIN_SPEED, MAX_SPEED] or not a finite number."""


class EmptyText(FrontendInputError):
    """The text has nothing to speak (no letters or digits after normalisation)."""


@dataclass(frozen=True)
class Voice:
    id: str  # what clients pass as "voice"
    name: str
    language: str
    sample_rate: int  # of the audio this front end returns (always the mel contract's rate)


@dataclass(frozen=True)
class FestivalVoice:
    voice: Voice
    scheme_name: str  # Festival's voice function is `voice_<scheme_name>`
    voice_subdir: str  # relative to the Festival voices root


# Voices Sparrow knows how to drive. Speed uses the HTS engine's "-r" (speech rate) option, which
# Festival's generic Duration_Stretch parameter does not affect for HTS voices (measured: a 6.17 s
# sentence stays 6.17 s under Duration_Stretch 0.5 and 2.0, but becomes 12.4 s / 3.1 s with -r).
VOICES: dict[str, FestivalVoice] = {
    "slt": FestivalVoice(
        voice=Voice(
            "slt", "CMU Arctic SLT (US English, female, HTS)", "en-US", features.SPEC.sample_rate
        ),
        scheme_name="cmu_us_slt_arctic_hts",
        voice_subdir="us/cmu_us_slt_arctic_hts",
    ),
}

DEFAULT_VOICES_ROOTS = (Path("/usr/share/festival/voices"), Path("/usr/lib/festival/voices"))


def check_speed(speed: object) -> float:
    """`speed` as a float; InvalidSpeed unless a finite number in [MIN_SPEED, MAX_SPEED]."""
    try:
        value = float(speed)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidSpeed(f"speed must be a number, got {speed!r}") from exc
    if not (math.isfinite(value) and MIN_SPEED <= value <= MAX_SPEED):
        raise InvalidSpeed(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {value}")
    return value
