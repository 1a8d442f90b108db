"""One synthesis on a pool stream, shared by the HTTP routes: check input, feed, collect or stream.

Same generator, two transports: a feeder task pushes mel (given, or one per sentence from the
text front end) into a `StreamHandle`; the HTTP routes either join every chunk or stream each
as it comes, and the websocket (server/streaming/session.py) sends each chunk as a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import numpy as np
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from models.dsp.features import validate_mel
from models.frontend.festival_frontend import FestivalFrontend
from server.audio import AudioOutput
from server.catalog import resolve_voice
from server.errors import InputTooLarge, map_error
from server.metrics import STATUS_AFTER_HEADERS, Metrics
from server.schemas import MelData, mel_to_array
from server.workers.pool import Flushed, StreamHandle

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ClientGone(Exception):
    """The HTTP client disconnected before the response was ready."""


# --- input checks -------------------------------------------------------------------------------


def check_text(text: str, max_chars: int, param: str = "text") -> None:
    if len(text) > max_chars:
        raise InputTooLarge(f"{param} has {len(text)} characters; the limit is {max_chars}", param)


def check_frames(n: int, max_frames: int, param: str = "mel") -> None:
    if n > max_frames:
        raise InputTooLarge(
            f"{param} has {n} frames ({n * 0.0125:.1f} s); the limit is {max_frames} per request "
            "(stream longer audio over the websocket in utterances)",
            param,
        )


def check_text_frames(n: int, max_frames: int, param: str = "text") -> None:
    if n > max_frames:
        raise InputTooLarge(
            f"{param} reads out as more than {max_frames} frames ({max_frames * 0.0125:.0f} s) of "
            "audio, the limit per text (max_text_frames): split it over several requests",
            param,
        )


def prepare_mel(raw: list[list[float]] | MelData | np.ndarray, max_frames: int) -> np.ndarray:
    """Any accepted mel form -> validated float32 [n, 80]; MelInputError / InputTooLarge."""
    arr = raw if isinstance(raw, np.ndarray) else mel_to_array(raw)
    if arr.ndim >= 1:
        check_frames(int(arr.shape[0]), max_frames)
    return validate_mel(arr)


def text_mels(
    frontend: FestivalFrontend, text: str, voice: str | None, speed: float
) -> Iterator[np.ndarray]:
    """The front end's lazy per-sentence mels; voice, speed, emptiness and Festival's presence are
    checked now, so a bad request fails before a stream is admitted."""
    return frontend.mel_for_text(text, voice=resolve_voice(voice), speed=speed)


# --- feeding ------------------------------------------------------------------------------------


async def push_mels(
    handle: StreamHandle, mels: Iterator[np.ndarray], max_frames: int, param: str = "text"
) -> None:
    """Push each mel of a text as the (possibly slow, threaded) front end yields it;
    InputTooLarge once it has made more than `max_frames` frames."""
    total = 0
    sentinel = object()
    while True:
        mel: Any = await asyncio.to_thread(next, mels, sentinel)
        if mel is sentinel:
            return
        mel = validate_mel(mel)
        total += mel.shape[0]
        check_text_frames(total, max_frames, param)
        handle.push(mel)


async def feed_mels(
    handle: StreamHandle, mels: Iterator[np.ndarray], max_frames: int, param: str = "text"
) -> None:
    """push_mels, then finish the stream: a whole request's text."""
    await push_mels(handle, mels, max_frames, param)
    handle.finish()


def start_feeder(handle: StreamHandle, feed: Awaitable[None]) -> asyncio.Task[None]:
    """Run `feed` as a task; if it fails, the stream fails with its error (readers see it)."""

    async def _run() -> None:
        try:
            await feed
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the reader, which maps it
            handle.fail(exc)

    return asyncio.ensure_future(_run())


async def audio_chunks(handle: StreamHandle) -> AsyncIterator[bytes]:
    """PCM chunks of the current utterance until its Flushed event; raises the stream's error."""
    while True:
        ev = await handle.read()
        if isinstance(ev, Flushed):
            return
        yield ev


async def encoded_chunks(handle: StreamHandle, output: AudioOutput) -> AsyncIterator[bytes]:
    """The current utterance through `output` (resampler + encoder): each non-empty piece as the
    encoder releases it, then what finishing the file releases."""
    async for pcm in audio_chunks(handle):
        data = output.feed(pcm)
        if data:
            yield data
    tail = output.finish()
    if tail:
        yield tail


async def collect(handle: StreamHandle) -> bytes:
    return b"".join([chunk async for chunk in audio_chunks(handle)])


# --- disconnects and streaming ------------------------------------------------------------------


async def wait_disconnect(receive: Receive) -> None:
    """Return when the client has gone (the request body must already have been read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it and raising ClientGone if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(wait_disconnect(receive))
    try:
        done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task in done:
        return task.result()
    raise ClientGone()


class AudioStreamResponse(StreamingResponse):
    """A StreamingResponse that stops at once when the client disconnects and always runs
    `on_close` (freeing the worker slot), whether the body ended, failed or was abandoned."""

    def __init__(
        self, content: AsyncIterator[bytes], on_close: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await unless_disconnected(receive, self.stream_response(send))
        except ClientGone:
            logger.info("client disconnected mid-stream; stream cancelled")
        except Exception as exc:
            # The status line is out, so the one honest signal left is a body cut short: return
            # without its last chunk and the server drops the connection. The request is counted
            # under the status the error would have had (RequestMetricsMiddleware).
            m = map_error(exc)
            scope.setdefault("state", {})[STATUS_AFTER_HEADERS] = m.status
            logger.warning(
                "%s failed after its headers were sent (%d %s: %s); connection aborted",
                scope.get("path"),
                m.status,
                m.code,
                m.message,
                exc_info=exc if m.code == "internal_error" else None,
            )
        finally:
            self._on_close()


def observe_stream(
    metrics: Metrics, route: str, handle: StreamHandle, t_start: float
) -> float | None:
    """Record time-to-first-audio of a finished or abandoned stream; returns it in seconds."""
    if handle.first_audio_at is None:
        return None
    ttfa = max(0.0, handle.first_audio_at - t_start)
    metrics.time_to_first_audio.labels(route=route).observe(ttfa)
    return ttfa


def request_start(scope: Scope) -> float:
    """When the request arrived (set by RequestMetricsMiddleware), else now."""
    return float(scope.get("state", {}).get("t_start", time.monotonic()))
