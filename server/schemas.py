"""Request and response models (pydantic). Unknown fields are rejected everywhere (extra="forbid").

Limits that depend on settings (text length, mel frames) are checked in server/synthesis.py,
so these models stay static; shape and value checks of mels are models.dsp.features.validate_mel's.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, field_validator, model_validator

from models.dsp.features import SPEC, MelInputError
from models.frontend.festival_frontend import MAX_SPEED, MIN_SPEED
from server.audio import OutputFormat

N_MELS = SPEC.n_mels
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
        if m != N_MELS:
            raise MelInputError(
                f"mel.shape {list(self.shape)} must be [frames, {N_MELS}]", "mel.shape"
            )
        if len(raw) != n * m * 4:
            raise MelInputError(
                f"mel.data has {len(raw)} bytes but shape {list(self.shape)} needs {n * m * 4} "
                "(float32 little-endian)",
                "mel.data",
            )
        return np.frombuffer(raw, dtype="<f4").reshape(n, m).astype(np.float32)


MelRows = list[list[StrictFloat]]
"""Mel frames as nested lists of JSON numbers: `true` or `"1.5"` is not a mel value."""

MelInput = Annotated[
    MelRows | MelData,
    Field(description="[frames, 80] log-mel as nested lists, or {data: base64 float32 LE, shape}"),
]


def mel_to_array(mel: MelRows | MelData) -> np.ndarray:
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


OutputRate = Literal[8000, 16000, 22050, 24000, 44100, 48000]
"""Sample rates a client may ask for; the vocoder runs at 24 kHz and the server resamples."""


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
        ge=MIN_SPEED,
        le=MAX_SPEED,
        strict=True,
        allow_inf_nan=False,
        description="speaking rate 0.25-4.0 (text only)",
    )
    format: OutputFormat = Field(
        "wav", description="wav, flac, mp3, opus (Ogg), aac (ADTS) or pcm (raw s16le)"
    )
    sample_rate: OutputRate = Field(24000, description="output sample rate in Hz")
    timestamps: bool = Field(
        False,
        strict=True,
        description="text only: answer JSON with the audio (base64) and each word's start and "
        "end in seconds",
    )

    def compact(self) -> SynthesizeRequest:
        """The same request with a mel list as base64 float32 (MelData): what the body decoder's
        process sends back, in a few MB that unpickle in a memcpy instead of a million floats.
        A mel that is not [frames, 80] stays a list, for the usual checks to name the problem."""
        if not isinstance(self.mel, list) or not self.mel:
            return self
        if {len(row) for row in self.mel} != {N_MELS}:
            return self
        arr = np.asarray(self.mel, dtype="<f4")
        packed = MelData(data=base64.b64encode(arr.tobytes()).decode(), shape=arr.shape)
        return self.model_copy(update={"mel": packed})

    @model_validator(mode="after")
    def _one_input(self) -> SynthesizeRequest:
        if (self.text is None) == (self.mel is None):
            raise ValueError("give exactly one of 'text' or 'mel'")
        return self


class Lenient(BaseModel):
    """OpenAI's request shapes: fields Sparrow does not use are accepted and ignored, as OpenAI
    adds fields often and clients forward them (see SpeechRequest.ignored_fields)."""

    model_config = ConfigDict(extra="allow")


class VoiceRef(Lenient):
    """A voice given as an object, as OpenAI's custom voices are: `{"id": "..."}`."""

    id: str


class SpeechRequest(Lenient):
    """POST /v1/audio/speech, OpenAI-compatible: OpenAI's fields, plus `sample_rate`."""

    model: str = Field(
        description="this server's model name, 'sparrow', or an OpenAI TTS name "
        "(tts-1*, tts-1-hd*, gpt-4o-mini-tts*)"
    )
    input: str = Field(description="text to speak (markdown and a small SSML subset are read)")
    voice: str | VoiceRef = Field(
        "slt", description="voice id or {id}; OpenAI voice names map to the default voice"
    )
    instructions: str | None = Field(
        None, description="accepted and ignored: the voice has no style prompt"
    )
    response_format: str = Field(
        "mp3", description="mp3, opus (Ogg), aac (ADTS), flac, wav or pcm (raw s16le), streamed"
    )
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED, strict=True, allow_inf_nan=False)
    stream_format: Literal["audio", "sse"] = Field(
        "audio", description="'audio' (raw bytes) or 'sse' (speech.audio.delta events)"
    )
    sample_rate: OutputRate = Field(24000, description="output sample rate in Hz")

    @field_validator("input")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("input is empty")
        return value

    @property
    def voice_id(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceRef) else self.voice

    @property
    def ignored_fields(self) -> list[str]:
        """Fields sent that Sparrow does not know (logged at debug, never an error)."""
        return sorted(self.model_extra or {})


# --- websocket messages (client -> server) ---------------------------------------------------------


class WsConfig(Strict):
    type: Literal["config"]
    seed: int = Field(0, ge=0, le=SEED_MAX, strict=True)
    voice: str | None = None
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED, strict=True, allow_inf_nan=False)
    sample_rate: OutputRate = Field(24000, description="output sample rate in Hz")
    timestamps: bool = Field(
        False, strict=True, description="send a `words` event before each sentence's audio"
    )


class WsText(Strict):
    type: Literal["text"]
    text: str


class WsMel(Strict):
    type: Literal["mel"]
    mel: MelRows | None = None
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
        description="current per-sample cost of a whole frame step: a low quantile of the "
        "worker's recent steady frames (estimate_frames of them), else its start-up measurement"
    )
    startup_us_per_sample: float | None = Field(
        None, description="per-sample cost the worker measured when it started"
    )
    kernel_us_per_sample: float | None = Field(
        None, description="kernel-only time at start-up (min of repeats)"
    )
    estimate_frames: int = Field(
        0, description="steady frames behind us_per_sample (0: it is the start-up figure)"
    )
    core_share: float | None = Field(
        None,
        description="share of its core the worker ran in those frames' steps (CPU / wall "
        "time; below 1 when something else takes the core)",
    )
    capacity: int = Field(
        description="streams admitted now: measured_capacity, lowered for a while after late frames"
    )
    measured_capacity: int = Field(
        0, description="streams the current us_per_sample allows (headroom, max_streams)"
    )
    startup_capacity: int = Field(0, description="streams the start-up measurement allowed")
    streams: int
    restarts: int
    error: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sparrow"
    root: str | None = Field(None, description="the served model this id names")
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


class VoiceRefCard(BaseModel):
    id: str
    name: str


class AudioVoiceList(BaseModel):
    """GET /v1/audio/voices: the shape OpenAI-compatible chat front ends discover voices by."""

    voices: list[VoiceRefCard]


class ModelRef(BaseModel):
    id: str


class AudioModelList(BaseModel):
    """GET /v1/audio/models: the shape OpenAI-compatible chat front ends discover models by."""

    models: list[ModelRef]


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoiceCard]
    default: str
    text_available: bool
    message: str | None = None


class Health(BaseModel):
    status: str
    error: str | None = None


class Readiness(BaseModel):
    ready: bool
    draining: bool
    streams_in_flight: int
    workers: list[WorkerStatus]
    error: str | None = None
