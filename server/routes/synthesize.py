"""POST /v1/synthesize: text or mel in, a whole audio file out (wav, flac, mp3, opus, aac or raw
s16le) at the sample rate asked for; with `timestamps`, JSON with the file (base64) and the words'
times."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from models.dsp.features import SPEC
from models.frontend.festival_frontend import Spoken
from server import audio
from server.body import body_doc, json_body
from server.catalog import resolve_voice
from server.clients import client_of
from server.deps import ApiKey, ClientsDep, FrontendDep, MetricsDep, PoolDep, SettingsDep
from server.errors import InvalidInput
from server.schemas import SynthesizeRequest
from server.synthesis import (
    ClientGone,
    check_text,
    collect,
    feed_mels,
    observe_stream,
    prepare_mel,
    request_start,
    start_feeder,
    unless_disconnected,
)

logger = logging.getLogger(__name__)
router = APIRouter(tags=["synthesis"], dependencies=[ApiKey])
ROUTE = "/v1/synthesize"

AUDIO_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {t: {} for t in [*audio.CONTENT_TYPES.values(), "application/json"]},
        "description": "mono audio at sample_rate (24 kHz by default); headers X-Sample-Rate, "
        "X-Time-To-First-Audio-Ms, X-Real-Time-Factor, x-request-id. With timestamps: JSON "
        '{"audio": base64 file, "content_type", "sample_rate", "samples", '
        '"words": [{"word", "start", "end"}]}',
    },
}
"""The audio; the error statuses are documented once, in server/openapi.py."""


@router.post(
    ROUTE,
    response_class=Response,
    responses=AUDIO_RESPONSES,
    openapi_extra=body_doc(SynthesizeRequest),
)
async def synthesize(
    body: Annotated[SynthesizeRequest, json_body(SynthesizeRequest)],
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    frontend: FrontendDep,
    metrics: MetricsDep,
    clients: ClientsDep,
) -> Response:
    """Vocode `mel` (or speak `text`) with `seed`; same seed and input give identical audio."""
    t_start = request_start(request.scope)
    mel: np.ndarray | None = None
    mels: Iterator[np.ndarray] = iter(())
    words: list[dict[str, Any]] = []
    if body.mel is not None:
        if body.timestamps:
            raise InvalidInput("timestamps apply to text input only", "timestamps")
        if body.speed != 1.0:
            raise InvalidInput(
                "speed applies to text input only; time-scale the mel instead", "speed"
            )
        if body.voice is not None:
            raise InvalidInput(
                "voice applies to text input only; a mel already carries its speaker", "voice"
            )
        mel = prepare_mel(body.mel, settings.max_mel_frames)
    else:
        assert body.text is not None
        check_text(body.text, settings.max_text_chars)
        spoken = frontend.spoken_for_text(body.text, resolve_voice(body.voice), body.speed)
        mels = _noting_words(spoken, words)

    output = audio.AudioOutput(body.format, body.sample_rate, pool.sample_rate)
    handle = clients.open_stream(pool, client_of(request.scope), seed=body.seed)
    feeder = None
    try:
        if mel is not None:  # all there and checked: no feeder needed
            handle.push(mel)
            handle.finish()
        else:  # sentence by sentence, as the front end speaks them
            feeder = start_feeder(handle, feed_mels(handle, mels, settings.max_text_frames))
        pcm = await unless_disconnected(request.receive, collect(handle))
    except ClientGone:
        logger.info("client left %s before the audio was ready; stream cancelled", ROUTE)
        return Response(status_code=499)
    finally:
        if feeder is not None:
            feeder.cancel()
        handle.close()
    ttfa = observe_stream(metrics, ROUTE, handle, t_start)
    rtf = handle.real_time_factor
    content, samples = output.whole(pcm)
    headers = {
        "X-Sample-Rate": str(body.sample_rate),
        "X-Audio-Samples": str(samples),
        "X-Seed": str(body.seed),
        "X-Worker-Core": str(handle.core),
    }
    if ttfa is not None:
        headers["X-Time-To-First-Audio-Ms"] = f"{ttfa * 1000:.1f}"
    if rtf is not None:
        headers["X-Real-Time-Factor"] = f"{rtf:.4f}"
    headers["X-Elapsed-Ms"] = f"{(time.monotonic() - t_start) * 1000:.1f}"
    if body.timestamps:
        return JSONResponse(
            {
                "audio": base64.b64encode(content).decode("ascii"),
                "content_type": output.content_type,
                "sample_rate": body.sample_rate,
                "samples": samples,
                "words": words,
            },
            headers=headers,
        )
    return Response(content, media_type=output.content_type, headers=headers)


def _noting_words(spoken: Iterator[Spoken], words: list[dict[str, Any]]) -> Iterator[np.ndarray]:
    """The mels of `spoken`, appending each segment's words to `words` in seconds of the whole
    audio (a mel frame is hop_length samples of output)."""
    frames = 0
    for sp in spoken:
        t0 = frames * SPEC.hop_length / SPEC.sample_rate
        words += [
            {"word": w.word, "start": round(t0 + w.start, 4), "end": round(t0 + w.end, 4)}
            for w in sp.words
        ]
        frames += sp.mel.shape[0]
        yield sp.mel
