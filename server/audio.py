"""Audio output: float frames -> s16le PCM, then resampled and encoded chunk by chunk for a client.

Shapes: float audio is float32 [samples] in [-1, 1]; PCM is mono signed 16-bit little-endian,
2 bytes a sample. `AudioOutput(fmt, rate)` is what a route holds for one response: the vocoder's
24 kHz PCM goes in frame by frame (server.resample, then server.encoders), container bytes come out
as soon as the codec has them. `encode()` is the whole-utterance form of the same encoders.
Formats, rates and what each container does when streamed: see server.encoders' docstring.
"""

from __future__ import annotations

import numpy as np

from models.dsp.features import SPEC
from server.encoders import (
    CONTENT_TYPES,
    STREAMED_FORMATS,
    UNKNOWN_LENGTH,
    AudioFormat,
    OutputFormat,
    StreamEncoder,
    check_output,
    open_encoder,
    wav_header,
)
from server.resample import SAMPLE_RATES, Resampler, UnsupportedSampleRate, open_resampler

__all__ = [
    "CONTENT_TYPES",
    "SAMPLE_RATES",
    "STREAMED_FORMATS",
    "UNKNOWN_LENGTH",
    "AudioFormat",
    "AudioOutput",
    "OutputFormat",
    "Resampler",
    "StreamEncoder",
    "UnsupportedSampleRate",
    "check_output",
    "encode",
    "float_to_pcm16",
    "open_encoder",
    "open_resampler",
    "pcm16_to_float",
    "wav_header",
]


def float_to_pcm16(audio: np.ndarray) -> bytes:
    """float32 [samples] in [-1, 1] -> s16le bytes (clipped, rounded to nearest)."""
    x = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    return np.rint(x * 32767.0).astype("<i2").tobytes()


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    """s16le bytes -> float32 [samples] in [-1, 1]."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32767.0


def encode(pcm: bytes, fmt: OutputFormat, sample_rate: int) -> bytes:
    """Whole-utterance s16le PCM -> the requested container's bytes.

    The same streaming encoder as AudioOutput's, fed at once; the result is the finished file with
    its close-time header (WAV and FLAC lengths, MP3's gapless tag), so it decodes to exactly the
    input's length. ValueError for an unknown format or empty compressed audio.
    """
    if fmt == "pcm":
        check_output(fmt, sample_rate)
        return pcm
    if fmt == "wav":
        check_output(fmt, sample_rate)
        return wav_header(sample_rate, len(pcm) // 2) + pcm[: len(pcm) - len(pcm) % 2]
    encoder = open_encoder(fmt, sample_rate)
    encoder.feed(pcm)
    encoder.finish()
    assert encoder.whole is not None
    return encoder.whole


class AudioOutput:
    """One response's audio: source-rate PCM in, `fmt` bytes at `sample_rate` out, as made.

    Construct it before the response starts: a format/rate the encoders cannot do raises here
    (ValueError, or UnsupportedSampleRate naming `sample_rate`), never mid-stream.
    """

    def __init__(
        self,
        fmt: OutputFormat,
        sample_rate: int = SPEC.sample_rate,
        source_rate: int = SPEC.sample_rate,
    ) -> None:
        self.format = fmt
        self.sample_rate = sample_rate
        self.encoder = open_encoder(fmt, sample_rate)
        self.resampler = open_resampler(source_rate, sample_rate)
        self.content_type = self.encoder.content_type

    def feed(self, pcm: bytes) -> bytes:
        """Source-rate s16le PCM (any length) -> container bytes ready now (maybe b"")."""
        return self.encoder.feed(self.resampler.feed(pcm))

    def finish(self) -> bytes:
        """The rest: the resampler's tail encoded, and the container's end."""
        return self.encoder.feed(self.resampler.finish()) + self.encoder.finish()

    def whole(self, pcm: bytes) -> tuple[bytes, int]:
        """A whole utterance at once (instead of feed/finish) -> (the finished file, with the
        lengths and tags a streamed file cannot have, and its sample count at `sample_rate`)."""
        resampled = self.resampler.feed(pcm) + self.resampler.finish()
        return encode(resampled, self.format, self.sample_rate), len(resampled) // 2
