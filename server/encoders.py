"""Streaming audio encoders: s16le mono PCM in, container bytes out as soon as the codec has them.

`open_encoder(fmt, rate)` gives a `StreamEncoder`: `feed(pcm)` returns the bytes ready now (maybe
b""), `finish()` the rest; the concatenation is a complete, decodable file. Per format:

- `pcm`: the bytes themselves. `wav`: a 44-byte header with unknown (0xFFFFFFFF) sizes, then PCM.
- `flac`, `mp3`, `opus` (Ogg Opus): libsndfile (bundled with the soundfile wheel: libFLAC, LAME,
  libopus) writing to an in-memory sink. Bytes handed out never change; libsndfile's close-time
  rewrites of earlier bytes land only in the whole-file image (`StreamEncoder.whole`):
  - FLAC: STREAMINFO keeps total samples 0 and MD5 0, the spec's "unknown". Frames come out per
    4096-sample block (170 ms at 24 kHz). FFmpeg and browsers read such a stream; libsndfile
    decodes it too, but soundfile's read() fails on it (it seeks after each block, which
    libsndfile's FLAC reader refuses while the length is unknown). `encode()` has the length.
  - MP3: constant bit rate, so decoders estimate the length from the size. LAME reserves its first
    frame for the Xing/LAME tag and fills it only at close; that frame is all zeros after its
    header (24 ms of silence to a decoder), so the stream leaves it out. The streamed file starts
    with LAME's encoder delay and has no gapless trim; the whole file has both.
  - Opus: libsndfile holds Ogg pages for 1 s by default; the page latency is set to OPUS_PAGE_MS.
    Opus codes 8/12/16/24/48 kHz only: `opus` at 22050 or 44100 raises UnsupportedSampleRate
    (param `sample_rate`) rather than changing the rate behind the client's back.
- `aac`: FFmpeg's native AAC encoder through PyAV, in ADTS framing (self-delimiting, made for
  streams), each packet flushed as it is muxed.
"""

from __future__ import annotations

import logging
import struct
from typing import Literal

import numpy as np
import soundfile as sf

from server.resample import UnsupportedSampleRate, check_rate

logger = logging.getLogger(__name__)

AudioFormat = Literal["wav", "flac", "mp3", "opus", "pcm"]
"""Formats the request schemas offer today."""
OutputFormat = Literal["wav", "flac", "mp3", "opus", "aac", "pcm"]
"""Every format the encoders make."""

CONTENT_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",  # Opus in an Ogg container (RFC 7845), as browsers and OpenAI's clients expect
    "aac": "audio/aac",  # ADTS
    # OpenAI's "pcm" is raw s16le; the rate goes in a header as well.
    "pcm": "audio/pcm",
}

STREAMED_FORMATS: frozenset[str] = frozenset({"wav", "pcm"})
"""Formats whose streamed bytes are the PCM itself (after a WAV header), for a route that sends
vocoder frames without an encoder. Through AudioOutput / open_encoder every format streams."""

OPUS_RATES: frozenset[int] = frozenset({8000, 12000, 16000, 24000, 48000})
OPUS_PAGE_MS = 40.0
"""Ogg page latency for Opus: two 20 ms packets a page, ~25 bytes of page header each 40 ms."""

MP3_QUALITY = 0.6
"""libsndfile's compression level for CBR MP3: 64 kbit/s at 16-24 kHz, 32 at 8 kHz."""

UNKNOWN_LENGTH = 0xFFFFFFFF
"""RIFF/data size for a WAV streamed before its length is known; libsndfile and browsers read to EOF."""

_SFC_SET_OGG_PAGE_LATENCY_MS = 0x1302  # sndfile.h; soundfile has no wrapper for it

_LIBSNDFILE: dict[str, tuple[str, str]] = {
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
}


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


class StreamEncoder:
    """Base: s16le PCM in, container bytes out.

    After `finish()`, `whole` is the file as the library left it, close-time header rewrites
    included (FLAC length and MD5, MP3's gapless tag); None for `wav`/`pcm`, which have none.
    """

    content_type: str

    def __init__(self, fmt: str, sample_rate: int) -> None:
        self.format = fmt
        self.sample_rate = sample_rate
        self.content_type = CONTENT_TYPES[fmt]
        self.samples_in = 0
        self.whole: bytes | None = None
        self._pending = b""

    def _samples(self, pcm: bytes) -> np.ndarray:
        """Whole samples of `self._pending + pcm`; a trailing half sample waits for the next chunk."""
        data = self._pending + pcm
        usable = len(data) - len(data) % 2
        self._pending = data[usable:]
        self.samples_in += usable // 2
        return np.frombuffer(data[:usable], dtype="<i2")

    def feed(self, pcm: bytes) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        raise NotImplementedError


class _RawEncoder(StreamEncoder):
    """`pcm` as is, or `wav` = unknown-length header + PCM."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        super().__init__(fmt, sample_rate)
        self._head = wav_header(sample_rate) if fmt == "wav" else b""

    def feed(self, pcm: bytes) -> bytes:
        out, self._head = self._head + self._samples(pcm).tobytes(), b""
        return out

    def finish(self) -> bytes:
        out, self._head = self._head, b""
        return out


class _Sink:
    """Seekable in-memory file for libsndfile's virtual I/O that remembers how much was handed out.

    `image` holds the file as libsndfile sees it (rewrites included); `take()` returns the bytes past
    those already handed out, which a later seek-back-and-rewrite cannot reach.
    """

    def __init__(self) -> None:
        self.image = bytearray()
        self.pos = 0
        self.sent = 0

    def write(self, data: bytes) -> int:
        end = self.pos + len(data)
        if end > len(self.image):
            self.image.extend(bytes(end - len(self.image)))
        self.image[self.pos : end] = data
        self.pos = end
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self.pos, len(self.image))[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, size: int = -1) -> bytes:
        return b""  # write-only: libsndfile probes the (empty) start of a new file

    def take(self, skip_to: int = 0) -> bytes:
        start = max(self.sent, skip_to)
        out = bytes(self.image[start:])
        self.sent = len(self.image)
        return out


class _SndfileEncoder(StreamEncoder):
    """FLAC, CBR MP3 or Ogg Opus through libsndfile, read back from the sink after each write."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        super().__init__(fmt, sample_rate)
        container, subtype = _LIBSNDFILE[fmt]
        self._sink = _Sink()
        extra: dict[str, object] = {}
        if fmt == "mp3":
            extra = {"compression_level": MP3_QUALITY, "bitrate_mode": "CONSTANT"}
        self._file = sf.SoundFile(
            self._sink, "w", sample_rate, 1, subtype, format=container, **extra
        )
        if fmt == "opus":
            self._set_page_latency(OPUS_PAGE_MS)
        # MP3: everything before the first real frame is LAME's reserved tag frame (see module doc).
        self._skip: int | None = None if fmt == "mp3" else 0

    def _set_page_latency(self, ms: float) -> None:
        value = sf._ffi.new("double*", ms)  # soundfile's cffi handles: no public sf_command
        rc = sf._snd.sf_command(
            self._file._file, _SFC_SET_OGG_PAGE_LATENCY_MS, value, sf._ffi.sizeof("double")
        )
        if rc != 0:
            logger.warning("libsndfile refused an Ogg page latency of %.0f ms (rc %d)", ms, rc)

    def _out(self) -> bytes:
        if self._skip is None:
            self._skip = _mp3_tag_frame_end(self._sink.image)
            if self._skip is None:
                return b""  # only the reserved frame so far
        return self._sink.take(self._skip)

    def feed(self, pcm: bytes) -> bytes:
        samples = self._samples(pcm)
        if samples.size:
            self._file.write(samples)
        return self._out()

    def finish(self) -> bytes:
        if self.samples_in == 0:
            self._file.close()
            raise ValueError(f"cannot encode empty audio as {self.format}")
        # close() writes the codec's tail past the handed-out prefix and rewrites header bytes
        # inside it; those rewrites reach only `whole`. If nothing was handed out yet (an MP3
        # shorter than its first frames), the stream is the whole file, tag frame included.
        self._file.close()
        self.whole = bytes(self._sink.image)
        if self._sink.sent == 0:
            return self.whole
        return self._sink.take(self._skip or 0)


def _mp3_tag_frame_end(image: bytearray) -> int | None:
    """Offset of the first real MP3 frame after LAME's zero-filled tag frame, or None if not yet."""
    if len(image) < 4 or image[0] != 0xFF:
        return 0  # no reserved frame: stream everything
    for i in range(4, len(image)):
        if image[i]:
            return i if image[i] == 0xFF else 0
    return None


class _AacEncoder(StreamEncoder):
    """AAC-LC in ADTS through PyAV (FFmpeg's native encoder), flushed per packet."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        super().__init__(fmt, sample_rate)
        import av  # PyAV loads FFmpeg's libraries: only when AAC is asked for

        self._av = av
        self._sink = _Sink()
        self._container = av.open(self._sink, "w", format="adts", options={"flush_packets": "1"})
        self._stream = self._container.add_stream("aac", rate=sample_rate, layout="mono")
        self._stream.bit_rate = 64000

    def _encode(self, frame: object) -> bytes:
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._sink.take()

    def feed(self, pcm: bytes) -> bytes:
        samples = self._samples(pcm)
        if not samples.size:
            return self._sink.take()
        frame = self._av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self.samples_in - samples.size
        return self._encode(frame)

    def finish(self) -> bytes:
        if self.samples_in == 0:
            self._container.close()
            raise ValueError(f"cannot encode empty audio as {self.format}")
        tail = self._encode(None)
        self._container.close()
        tail += self._sink.take()
        self.whole = bytes(self._sink.image)
        return tail


def check_output(fmt: str, sample_rate: int) -> None:
    """Raise before any byte is sent: ValueError for an unknown format, UnsupportedSampleRate for a
    rate outside SAMPLE_RATES or one `fmt` cannot carry (Opus at 22050/44100)."""
    if fmt not in CONTENT_TYPES:
        raise ValueError(f"unknown audio format {fmt!r}; use one of {', '.join(CONTENT_TYPES)}")
    check_rate(sample_rate)
    if fmt == "opus" and sample_rate not in OPUS_RATES:
        allowed = ", ".join(str(r) for r in sorted(OPUS_RATES))
        raise UnsupportedSampleRate(
            f"opus codes {allowed} Hz only; sample_rate {sample_rate} needs another format"
        )


def open_encoder(fmt: str, sample_rate: int) -> StreamEncoder:
    """A fresh streaming encoder for `fmt` at `sample_rate` (checked by check_output)."""
    check_output(fmt, sample_rate)
    if fmt in _LIBSNDFILE:
        return _SndfileEncoder(fmt, sample_rate)
    if fmt == "aac":
        return _AacEncoder(fmt, sample_rate)
    return _RawEncoder(fmt, sample_rate)
