"""POST /v1/audio/speech: OpenAI-compatible text to speech, streamed chunk by chunk as made.

Works with the official client (`client.audio.speech.create(...)` and its streaming variant).
Formats: wav (streamed with an unknown-length header), pcm (raw 24 kHz s16le, streamed), and flac,
mp3 and opus (Ogg), encoded when the audio is complete (see server.audio.STREAMED_FORMATS).
Errors use OpenAI's `{"error": {...}}` shape like every Sparrow route.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response

from models.frontend.festival_frontend import EmptyText
from server import audio
from server.deps import ApiKey, FrontendDep, MetricsDep, PoolDep, SettingsDep
from server.errors import InvalidInput, UnknownModel
from server.schemas import OPENAI_MODELS, SpeechRequest
from server.synthesis import (
    AudioStreamResponse,
    ClientGone,
    audio_chunks,
    check_text,
    collect,
    feed_mels,
    observe_stream,
    request_start,
    start_feeder,
    text_mels,
    unless_disconnected,
)
from server.workers.pool import StreamHandle

logger = logging.getLogger(__name__)
router = APIRouter(tags=["openai"], dependencies=[ApiKey])
ROUTE = "/v1/audio/speech"
FORMATS = ("wav", "pcm", "flac", "mp3", "opus")  # OpenAI's aac: libsndfile has no encoder


class BadParameter(InvalidInput):
    status = 400
    code = "unsupported_value"


def check_request(body: SpeechRequest, model_name: str) -> None:
    if body.model not in {model_name, "sparrow"} | OPENAI_MODELS:
        raise UnknownModel(
            f"model {body.model!r} does not exist here; use {model_name!r} (or an OpenAI TTS name)",
            "model",
        )
    if body.response_format not in FORMATS:
        raise BadParameter(
            f"response_format {body.response_format!r} is not supported; use one of {list(FORMATS)}",
            "response_format",
        )
    if body.stream_format != "audio":
        raise BadParameter(
            f"stream_format {body.stream_format!r} is not supported; only 'audio' (raw bytes)",
            "stream_format",
        )


@router.post(ROUTE, response_class=Response)
async def speech(
    body: SpeechRequest,
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    frontend: FrontendDep,
    metrics: MetricsDep,
) -> Response:
    t_start = request_start(request.scope)
    check_request(body, pool.model_info.get("name") or pool.model_dir.name)
    check_text(body.input, settings.max_text_chars, "input")
    try:
        mels = text_mels(frontend, body.input, body.voice, body.speed)
    except EmptyText as exc:
        exc.param = "input"  # OpenAI's name for the text
        raise
    fmt = body.response_format

    handle = pool.open_stream(seed=0)
    feeder = start_feeder(handle, feed_mels(handle, mels, settings.max_text_frames, "input"))

    def cleanup() -> None:
        feeder.cancel()
        handle.close()
        observe_stream(metrics, ROUTE, handle, t_start)

    headers = {"X-Sample-Rate": str(pool.sample_rate)}
    media_type = audio.CONTENT_TYPES[fmt]
    try:
        if fmt not in audio.STREAMED_FORMATS:
            pcm = await unless_disconnected(request.receive, collect(handle))
            cleanup()
            return Response(
                audio.encode(pcm, fmt, pool.sample_rate), media_type=media_type, headers=headers
            )
        chunks = audio_chunks(handle)
        # Wait for the first audio before sending headers, so a failure before any audio is a
        # proper error status rather than an empty 200.
        first = await unless_disconnected(request.receive, anext(chunks, b""))
    except ClientGone:
        cleanup()
        return Response(status_code=499)
    except BaseException:
        cleanup()
        raise
    prefix = audio.wav_header(pool.sample_rate) if fmt == "wav" else b""
    return AudioStreamResponse(
        _body(prefix + first, chunks, handle), cleanup, media_type=media_type, headers=headers
    )


async def _body(
    first: bytes, rest: AsyncIterator[bytes], handle: StreamHandle
) -> AsyncIterator[bytes]:
    """Yield audio as it is made. If the stream fails now, raising aborts the connection, so the
    client sees a truncated body (never a complete-looking file with audio missing)."""
    yield first
    async for chunk in rest:
        yield chunk
