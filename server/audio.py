"""Audio encoding: float frames -> s16le PCM, and PCM -> WAV / FLAC / MP3 / Ogg Opus containers.

Pure functions on bytes and arrays (no I/O besides in-memory buffers). Shapes: float audio is
float32 [samples] in [-1, 1]; PCM is mono signed 16-bit little-endian, 2 bytes a sample.
"""

from __future__ import annotations

import io
import struct
from typing import Literal

import numpy as np
import soundfile as sf

AudioFormat = Literal["wav", "flac", "mp3", "opus", "pcm"]
STREAMED_FORMATS: frozenset[str] = frozenset({"wav", "pcm"})
"""Formats whose bytes can be sent as frames are made. The compressed ones are encoded when the
audio is complete: FLAC's header holds the length, libsndfile rewrites MP3's LAME/Xing header when
it closes, and it emits Ogg Opus pages only at the end."""

CONTENT_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",  # Opus in an Ogg container (RFC 7845), as browsers and OpenAI's clients expect
    # OpenAI's "pcm" is the same raw 24 kHz s16le; the rate goes in a header as well.
    "pcm": "audio/pcm",
}

UNKNOWN_LENGTH = 0xFFFFFFFF
"""RIFF/data size for a WAV streamed before its length is known; libsndfile and browsers read to EOF."""


def float_to_pcm16(audio: np.ndarray) -> bytes:
    """float32 [samples] in [-1, 1] -> s16le bytes (clipped, rounded to nearest)."""
    x = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    return np.rint(x * 32767.0).astype("<i2").tobytes()


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    """s16le bytes -> float32 [samples] in [-1, 1]."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32767.0


def wav_header(sample_rate: int, n_samples: int | None = None, channels: int = 1) -> bytes:
    """44-byte PCM WAV header; `n_samples=None` writes the unknown-length form for streaming."""
    block_align = channels * 2
    if n_samples is None:
        riff_size = data_size = UNKNOWN_LENGTH
    else:
        data_size = n_samples * block_align
        riff_size = 36 + data_size
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVE"
        + b"fmt "
        + struct.pack(
            "<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, 16
        )
        + b"data"
        + struct.pack("<I", data_size)
    )


def encode(pcm: bytes, fmt: AudioFormat, sample_rate: int) -> bytes:
    """Whole-utterance s16le PCM -> the requested container's bytes."""
    if fmt == "pcm":
        return pcm
    if fmt == "wav":
        return wav_header(sample_rate, len(pcm) // 2) + pcm
    if fmt in _LIBSNDFILE:
        samples = np.frombuffer(pcm, dtype="<i2")
        if samples.size == 0:
            # libsndfile writes no readable FLAC/MP3/Opus for zero samples; refuse rather than
            # hand out a file no decoder opens.
            raise ValueError(f"cannot encode empty audio as {fmt}")
        container, subtype = _LIBSNDFILE[fmt]
        buf = io.BytesIO()
        sf.write(buf, samples, sample_rate, format=container, subtype=subtype)
        return buf.getvalue()
    raise ValueError(f"unknown audio format {fmt!r}; use one of {', '.join(CONTENT_TYPES)}")


# libsndfile (bundled with the soundfile wheel, 1.2.x: LAME for MP3, libopus) container + codec.
# Opus runs at 8/12/16/24/48 kHz, so 24 kHz audio goes in without resampling.
_LIBSNDFILE: dict[str, tuple[str, str]] = {
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
}


class AudioOutput:
    """PLACEHOLDER until the streaming encoders land: 24 kHz PCM chunks in, container bytes out."""

    def __init__(self, fmt: str, sample_rate: int, source_rate: int = 24000) -> None:
        import soxr

        self.fmt, self.sample_rate, self.source_rate = fmt, sample_rate, source_rate
        self.content_type = CONTENT_TYPES[fmt]
        self._rs = (
            soxr.ResampleStream(source_rate, sample_rate, 1, dtype="int16")
            if sample_rate != source_rate
            else None
        )
        self._held: list[bytes] = []
        self._started = False

    def _resample(self, pcm: bytes, last: bool = False) -> bytes:
        if self._rs is None:
            return pcm
        x = np.frombuffer(pcm, dtype="<i2")
        return self._rs.resample_chunk(x, last=last).astype("<i2").tobytes()

    def feed(self, pcm: bytes) -> bytes:
        out = self._resample(pcm)
        if self.fmt in STREAMED_FORMATS:
            head = b""
            if self.fmt == "wav" and not self._started:
                head = wav_header(self.sample_rate)
            self._started = True
            return head + out
        self._held.append(out)
        return b""

    def finish(self) -> bytes:
        out = self._resample(b"", last=True)
        if self.fmt in STREAMED_FORMATS:
            head = b""
            if self.fmt == "wav" and not self._started:
                head = wav_header(self.sample_rate)
            return head + out
        return encode(b"".join(self._held) + out, self.fmt, self.sample_rate)  # type: ignore[arg-type]
