"""Request and response models (pydantic). Unknown fields are rejected everywhere (extra="forbid").

Limits that depend on settings (text length, mel frames) are checked in server/synthesis.py,
so these models stay static; shape and value checks of mels are models.features.validate_mel's.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.dsp.features import MelInputError
from server.audio import AudioFormat

N_MELS = 80
SEED_MAX = 2**63 - 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MelData(Strict):
    """Compact mel: base64 of little-endian float32, row-major [frames, 80]."""

    data: str = Field(description="base64 of float32 LE values, row-major")
    shape: tuple[int, int] = Field(description="[frames, 80]")

    def to_array(self) -> np.ndarray:
        try:
            raw = base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MelInputError(f"mel.data is not valid base64: {exc}", "mel.data") from exc
        n, m = self.shape
        if n < 0 or m < 0:
            raise MelInputError(f"mel.shape {list(self.shape)} has a negative size", "mel.shape")
        if len(raw) != n * m * 4:
            raise MelInputError(
                f"mel.data has {len(raw)} bytes but shape {list(self.shape)} needs {n * m * 4} "
                "(float32 little-endian)",
                "mel.data",
            )
        return np.frombuffer(raw, dtype="<f4").reshape(n, m).astype(np.float32)


MelInput = Annotated[
    list[list[float]] | MelData,
    Field(description="[frames, 80] log-mel as nested lists, or {data: base64 float32 LE, shape}"),
]


def mel_to_array(mel: list[list[float]] | MelData) -> np.ndarray:
    """Either mel form -> float32 array (shape not yet checked; validate_mel does that)."""
    if isinstance(mel, MelData):
        return mel.to_array()
    if mel and len({len(row) for row in mel}) > 1:
        raise MelInputError("mel rows have different lengths; every frame needs 80 values")
    return (
        np.asarray(mel, dtype=np.float32).reshape(len(mel), -1)
        if mel
        else np.zeros((0, N_MELS), np.float32)
    )


class SynthesizeRequest(Strict):
    """POST /v1/synthesize: exactly one of `text` or `mel`."""

    text: str | None = Field(None, description="text to speak (needs the Festival front end)")
    mel: MelInput | None = None
    voice: str | None = Field(None, description="front-end voice id (text input only); default slt")
    seed: int = Field(
        0,
        ge=0,
        le=SEED_MAX,
        strict=True,
        description="sampling seed: same seed + input = same audio",
    )
    speed: float = Field(
        1.0,
        gt=0.0,
        le=10.0,
        strict=True,
        allow_inf_nan=False,
        description="speaking rate (text only)",
    )
    format: AudioFormat = Field("wav", description="wav, flac, mp3, opus (Ogg) or pcm (raw s16le)")

    @model_validator(mode="after")
    def _one_input(self) -> SynthesizeRequest:
        if (self.text is None) == (self.mel is None):
            raise ValueError("give exactly one of 'text' or 'mel'")
        return self


OPENAI_VOICES = frozenset(
    {
        "alloy",
        "ash",
        "ballad",
        "coral",
        "echo",
        "fable",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
        "marin",
        "cedar",
    }
)
"""OpenAI's voice names: accepted so stock clients work, and spoken with the default voice."""

OPENAI_MODELS = frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts"})


class SpeechRequest(Strict):
    """POST /v1/audio/speech, OpenAI-compatible (all formats but aac; wav and pcm stream)."""

    model: str = Field(description="this server's model name, 'sparrow', or an OpenAI TTS name")
    input: str = Field(description="text to speak")
    voice: str = Field("slt", description="voice id; OpenAI voice names map to the default voice")
    response_format: str = Field(
        "wav", description="wav or pcm (24 kHz s16le; streamed as made), flac, mp3 or opus"
    )
    speed: float = Field(1.0, ge=0.25, le=4.0, strict=True, allow_inf_nan=False)
    stream_format: str = Field("audio", description="only 'audio' (raw bytes streamed as made)")

    @field_validator("input")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("input is empty")
        return value


# --- websocket messages (client -> server) ---------------------------------------------------------


class WsConfig(Strict):
    type: Literal["config"]
    seed: int = Field(0, ge=0, le=SEED_MAX, strict=True)
    voice: str | None = None
    speed: float = Field(1.0, gt=0.0, le=10.0, strict=True, allow_inf_nan=False)


class WsText(Strict):
    type: Literal["text"]
    text: str


class WsMel(Strict):
    type: Literal["mel"]
    mel: list[list[float]] | None = None
    data: str | None = None
    shape: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> WsMel:
        if (self.mel is None) == (self.data is None):
            raise ValueError(
                "give either 'mel' (nested lists) or 'data' + 'shape' (base64 float32)"
            )
        if self.data is not None and self.shape is None:
            raise ValueError("'data' needs 'shape': [frames, 80]")
        return self

    def to_array(self) -> np.ndarray:
        if self.data is not None:
            assert self.shape is not None
            return MelData(data=self.data, shape=self.shape).to_array()
        assert self.mel is not None
        return mel_to_array(self.mel)


class WsFlush(Strict):
    type: Literal["flush"]


class WsClose(Strict):
    type: Literal["close"]


WsMessage = Annotated[WsConfig | WsText | WsMel | WsFlush | WsClose, Field(discriminator="type")]


# --- responses --------------------------------------------------------------------------------------


class WorkerStatus(BaseModel):
    core: int
    state: str
    pid: int | None
    us_per_sample: float | None = Field(
        description="measured per-sample cost of a whole frame step"
    )
    kernel_us_per_sample: float | None = Field(
        None, description="kernel-only time (min of repeats)"
    )
    capacity: int = Field(
        description="streams admitted now (lowered for a while after late frames)"
    )
    measured_capacity: int = Field(0, description="capacity from the start-up measurement")
    streams: int
    restarts: int
    error: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sparrow"
    description: str | None = None
    trained: bool | None = None
    isa: str | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    sparsity: dict[str, Any] = Field(default_factory=dict)
    tvm_version: str | None = None
    workers: list[WorkerStatus] = Field(default_factory=list)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class VoiceCard(BaseModel):
    id: str
    name: str
    language: str
    sample_rate: int


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoiceCard]
    default: str
    text_available: bool
    message: str | None = None


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    draining: bool
    streams_in_flight: int
    workers: list[WorkerStatus]
    error: str | None = None
