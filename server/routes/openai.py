"""POST /v1/audio/speech: OpenAI-compatible text to speech, every format streamed as it is made.

Accepts what OpenAI's clients send (server/schemas.py SpeechRequest): OpenAI's model and voice
names, voice objects, `instructions` (ignored) and fields Sparrow does not know (logged at debug).
`stream_format: "audio"` streams the container's bytes; `"sse"` streams `speech.audio.delta`
events (base64 of the same bytes) and a final `speech.audio.done`. Errors use OpenAI's
`{"error": {...}}` shape like every Sparrow route; an error after the first event is sent as an
`error` event.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response

from models.frontend.festival_frontend import EmptyText
from server import audio
from server.body import body_doc, json_body
from server.catalog import accepts_model
from server.clients import client_of
from server.deps import ApiKey, ClientsDep, FrontendDep, MetricsDep, PoolDep, SettingsDep
from server.errors import InvalidInput, UnknownModel, error_body, map_error
from server.schemas import SpeechRequest
from server.synthesis import (
    AudioStreamResponse,
    ClientGone,
    check_text,
    encoded_chunks,
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
SSE_MEDIA_TYPE = "text/event-stream"
FRAME_S = 0.0125
"""Seconds of audio an output token stands for in `speech.audio.done`'s usage (one mel frame)."""


class BadParameter(InvalidInput):
    status = 400
    code = "unsupported_value"


def check_request(body: SpeechRequest, served: str) -> None:
    if not accepts_model(body.model, served):
        raise UnknownModel(
            f"model {body.model!r} does not exist here; use {served!r}, 'sparrow' or an OpenAI "
            "TTS name (tts-1, tts-1-hd, gpt-4o-mini-tts)",
            "model",
        )
    if body.response_format not in audio.CONTENT_TYPES:
        raise BadParameter(
            f"response_format {body.response_format!r} is not supported; use one of "
            f"{sorted(audio.CONTENT_TYPES)}",
            "response_format",
        )
    if body.ignored_fields:
        logger.debug("%s: ignoring fields %s", ROUTE, body.ignored_fields)


@router.post(
    ROUTE,
    response_class=Response,
    responses={
        200: {
            "content": {t: {} for t in {*audio.CONTENT_TYPES.values(), SSE_MEDIA_TYPE}},
            "description": "audio streamed as made; headers X-Sample-Rate, "
            "X-Time-To-First-Audio-Ms, x-request-id",
        }
    },
    openapi_extra=body_doc(SpeechRequest),
)
async def speech(
    body: Annotated[SpeechRequest, json_body(SpeechRequest)],
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    frontend: FrontendDep,
    metrics: MetricsDep,
    clients: ClientsDep,
) -> Response:
    t_start = request_start(request.scope)
    check_request(body, pool.model_info.get("name") or pool.model_dir.name)
    check_text(body.input, settings.max_text_chars, "input")
    try:
        mels = text_mels(frontend, body.input, body.voice_id, body.speed)
    except EmptyText as exc:
        exc.param = "input"  # OpenAI's name for the text
        raise
    output = audio.AudioOutput(body.response_format, body.sample_rate, pool.sample_rate)

    handle = clients.open_stream(pool, client_of(request.scope), seed=0)
    feeder = start_feeder(handle, feed_mels(handle, mels, settings.max_text_frames, "input"))

    def cleanup() -> None:
        feeder.cancel()
        handle.close()
        observe_stream(metrics, ROUTE, handle, t_start)

    try:
        chunks = encoded_chunks(handle, output)
        # Wait for the first audio before sending headers, so a failure before any audio is a
        # proper error status rather than an empty 200.
        first = await unless_disconnected(request.receive, anext(chunks, b""))
    except ClientGone:
        cleanup()
        return Response(status_code=499)
    except BaseException:
        cleanup()
        raise
    ttfa_ms = (time.monotonic() - t_start) * 1000
    headers = {
        "X-Sample-Rate": str(body.sample_rate),
        "X-Time-To-First-Audio-Ms": f"{ttfa_ms:.1f}",
        "X-Worker-Core": str(handle.core),
    }
    if body.stream_format == "sse":
        events = _sse(first, chunks, handle, body, ttfa_ms, t_start)
        return AudioStreamResponse(events, cleanup, media_type=SSE_MEDIA_TYPE, headers=headers)
    return AudioStreamResponse(
        _body(first, chunks), cleanup, media_type=output.content_type, headers=headers
    )


async def _body(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Yield audio as it is made. If the stream fails now, raising aborts the connection, so the
    client sees a truncated body (never a complete-looking file with audio missing)."""
    yield first
    async for chunk in rest:
        yield chunk


def _event(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _sse(
    first: bytes,
    rest: AsyncIterator[bytes],
    handle: StreamHandle,
    body: SpeechRequest,
    ttfa_ms: float,
    t_start: float,
) -> AsyncIterator[bytes]:
    """OpenAI's speech events: a `speech.audio.delta` per piece of audio (base64 of the format's
    bytes), then `speech.audio.done`; a failure after the first event is an `error` event."""
    sent = 0
    try:
        sent += len(first)
        yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(first).decode()})
        async for piece in rest:
            sent += len(piece)
            yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()})
    except Exception as exc:  # noqa: BLE001 - the status is out; the error goes in the stream
        m = map_error(exc)
        logger.warning("%s failed mid-stream (%d %s): %s", ROUTE, m.status, m.code, m.message)
        yield _event({"type": "error", **error_body(m)})
        return
    frames = round(handle.samples / handle.pool.sample_rate / FRAME_S)
    rtf = handle.real_time_factor
    yield _event(
        {
            "type": "speech.audio.done",
            # Sparrow has no tokens: input counts characters, output counts 12.5 ms frames.
            "usage": {
                "input_tokens": len(body.input),
                "output_tokens": frames,
                "total_tokens": len(body.input) + frames,
            },
            "sample_rate": body.sample_rate,
            "bytes": sent,
            "time_to_first_audio_ms": round(ttfa_ms, 1),
            "real_time_factor": None if rtf is None else round(rtf, 5),
            "elapsed_ms": round((time.monotonic() - t_start) * 1000, 1),
        }
    )
