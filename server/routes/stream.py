"""Websocket /v1/stream: incremental mel (or text) in, PCM frames out as they are made.

Protocol (docs/protocol.md): optional `config` first; `mel` messages are vocoded as they arrive;
`text` messages are fragments of one running text (an LLM's tokens): each sentence is spoken as
soon as its end is known (models/frontend/assembler.py), and a fragment with nothing to say is
punctuation or space of that text, never an error; `flush` speaks the pending text and ends an
utterance (answered by `flushed` once all its audio is sent); `close` flushes, sends `end` and
closes with 1000. With `config.timestamps`, a `words` event precedes each sentence's audio.
Errors: an `error` event, then a close code chosen by server/errors.py.

A session runs four tasks: the receiver (parses messages, enforces the idle timeout), the processor
(applies them in order; text goes through the front end one sentence at a time), the sender
(audio and events to the client) and a watcher for the bounded send buffer and for draining.
A session takes a worker's stream slot when it first asks for audio (its first `mel`, `text`,
`flush` or `close`), not when it connects, so idle sockets hold no capacity; each client address
may hold at most `max_sockets_per_client` sockets. A send blocked for `ws_send_timeout_s` (the
client stopped reading) ends the session with 4429, as does unsent audio past
`ws_send_buffer_bytes`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from typing import Any, get_args

from fastapi import APIRouter, WebSocket
from pydantic import TypeAdapter, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from models.dsp.features import SPEC, validate_mel
from models.frontend.assembler import Piece, RunningTextTooLong, TextAssembler
from models.frontend.festival_frontend import OPENING_WORDS
from server.audio import AudioOutput
from server.catalog import resolve_voice
from server.clients import client_of
from server.deps import check_api_key
from server.errors import (
    ClientTooSlow,
    IdleTimeout,
    InputTooLarge,
    InvalidInput,
    UnsupportedData,
    map_error,
)
from server.schemas import OutputRate, WsClose, WsConfig, WsFlush, WsMel, WsMessage, WsText
from server.synthesis import check_frames, check_text, check_text_frames
from server.workers.pool import Flushed, StreamHandle

logger = logging.getLogger(__name__)
router = APIRouter(tags=["stream"])
ROUTE = "/v1/stream"
_MESSAGE = TypeAdapter(WsMessage)
OPENING_CLAUSE = 5
"""Fewest words of a first sentence's opening clause spoken before the sentence has ended."""
CLOSE_WAIT_S = 10.0
"""How long an error/close frame may wait for a client that stopped reading before we give up."""


def parse_message(text: str) -> WsConfig | WsText | WsMel | WsFlush | WsClose:
    """One client message -> its model; InvalidInput (close 1007) naming the problem.

    Parsed as the HTTP routes parse a body (the json module, then the model), so both accept the
    same documents: e.g. a lone surrogate escape such as "\\ud800" is JSON, and the text front
    end drops it, on either route.
    """
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidInput(f"message is not valid JSON: {exc}") from exc
    try:
        return _MESSAGE.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"][1:] if not str(p)[:1].isupper()) or "message"
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = "type"
        extra = f" ({len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        raise InvalidInput(f"{loc}: {err['msg']}{extra}", loc) from exc


class Session:
    def __init__(self, ws: WebSocket) -> None:
        state = ws.app.state
        self.ws = ws
        self.pool = state.pool
        self.settings = state.settings
        self.metrics = state.metrics
        self.frontend = state.frontend
        self.t_open = time.monotonic()
        self.handle: StreamHandle | None = None  # opened at the first input (_open_stream)
        self.opened = asyncio.Event()
        self.seed = 0
        self.client = client_of(ws.scope)
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.finishes: collections.deque[str] = collections.deque()  # "flush" | "close", in order
        self.voice: str | None = None
        self.speed = 1.0
        self.sample_rate = int(self.pool.sample_rate)
        self.output: AudioOutput | None = None  # the current utterance's resampler
        # the running text of `text` messages; a long first sentence's opening goes first
        self.text = TextAssembler(self.settings.max_text_chars, (OPENING_CLAUSE, OPENING_WORDS))
        self.text_checked = False  # voice, speed and Festival checked at the first text
        self.timestamps = False  # send `words` events
        self.frames_pushed = 0  # mel frames sent to the vocoder on this connection
        self.utt_text_frames = 0  # frames the text of this utterance read out as
        self.send_lock = asyncio.Lock()  # the sender and the processor (`words`) both send
        self.got_input = False
        self.processing = False
        self.closing = False
        self.draining = False
        self.utt_frames = 0
        self.samples_sent = 0
        self.t_first_request: float | None = None
        self.t_first_audio: float | None = None
        self.last_activity = time.monotonic()

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        await self.ws.accept()
        status = "1000"
        try:
            check_api_key(self.ws, self.settings)
            self.sample_rate = _query_rate(self.ws, self.sample_rate)
            with self.ws.app.state.clients.socket(self.client):
                await self.ws.send_json({"type": "start", **self._format()})
                code = await self._serve()
            if self.handle is not None:
                self.handle.close()  # all audio is out: free the worker slot before the handshake
            status = str(code) if code is not None else "client_closed"
            if code is not None:
                await self._close(code)
        except (WebSocketDisconnect, OSError):
            status = "client_closed"
        except Exception as exc:  # every error ends as an error event + a close code
            m = map_error(exc)
            status = str(m.ws_close)
            if m.code == "internal_error":
                logger.error("websocket session failed: %r", exc, exc_info=exc)
            else:
                logger.info("websocket closed with %d: %s", m.ws_close, m.message)
            if self.handle is not None:
                self.handle.close()  # free the worker slot now, not after a slow client's close
            await self._error_close(m.message, m.ws_close)
        finally:
            if self.handle is not None:
                self.handle.close()
                if self.t_first_audio is not None and self.t_first_request is not None:
                    self.metrics.time_to_first_audio.labels(route=ROUTE).observe(
                        self.t_first_audio - self.t_first_request
                    )
            self.metrics.requests.labels(route=ROUTE, status=status).inc()
            self.metrics.request_duration.labels(route=ROUTE).observe(
                time.monotonic() - self.t_open
            )

    async def _serve(self) -> int | None:
        """Run the session's tasks; return the close code, or None if the client left."""
        tasks = {
            asyncio.ensure_future(self._receiver()): "receiver",
            asyncio.ensure_future(self._processor()): "processor",
            asyncio.ensure_future(self._sender()): "sender",
            asyncio.ensure_future(self._watch()): "watch",
        }
        pending = set(tasks)
        try:
            while True:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                # Every finished task's exception is retrieved; the first one ends the session.
                errors = [e for e in (t.exception() for t in done) if e is not None]
                if errors:
                    raise errors[0]
                for task in done:
                    name = tasks[task]
                    if name == "sender":  # `end` was sent
                        return 1001 if self.draining else 1000
                    if name == "receiver":
                        return None  # the client disconnected
                    if name == "watch" and self.handle is None:
                        return 1001  # draining before the client asked for any audio
                    # the processor ends after `close`; the watcher after starting a drain
                if not pending:
                    return 1000
        finally:
            for task in pending:
                task.cancel()
            # bounded: however a task handles its cancel, the session (and its slot) ends
            if pending:
                ended, stuck = await asyncio.wait(pending, timeout=CLOSE_WAIT_S)
                for task in ended:  # retrieved, so none is reported as never retrieved
                    if not task.cancelled() and task.exception() is not None:
                        logger.debug("websocket task ended with %r", task.exception())
                if stuck:
                    logger.warning("websocket tasks still running after cancel: %s", stuck)

    async def _close(self, code: int, reason: str = "") -> None:
        if self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(code, reason[:120]), CLOSE_WAIT_S)

    async def _error_close(self, message: str, code: int) -> None:
        if self.ws.application_state != WebSocketState.CONNECTED:
            return
        try:
            await asyncio.wait_for(
                self.ws.send_json({"type": "error", "message": message}), CLOSE_WAIT_S
            )
        except Exception:  # noqa: BLE001 - whatever failed, the client is unreachable
            return  # the client is gone or not reading: nothing more can reach it
        # A close reason is limited to 123 bytes; the full message went in the error event.
        await self._close(code, message.encode()[:120].decode(errors="ignore"))

    # --- tasks ---------------------------------------------------------------------------------

    def _busy(self) -> bool:
        queued = self.handle.queued_bytes if self.handle is not None else 0
        return bool(self.processing or not self.inbox.empty() or self.finishes or queued)

    async def _receiver(self) -> None:
        idle = self.settings.idle_timeout_s
        while True:
            remaining = idle - (time.monotonic() - self.last_activity)
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands as
                # the message arrives, and a receiver that outlives its session holds the slot.
                async with asyncio.timeout(max(0.05, remaining)):
                    msg = await self.ws.receive()
            except TimeoutError:
                if self._busy():
                    self.last_activity = time.monotonic()  # working for the client is not idling
                elif time.monotonic() - self.last_activity >= idle:
                    raise IdleTimeout(
                        f"no message for {idle:g} s; closing the idle stream"
                    ) from None
                continue
            if msg["type"] == "websocket.disconnect":
                return
            self.last_activity = time.monotonic()
            if msg.get("bytes") is not None:
                raise UnsupportedData(
                    "binary messages are not accepted: send JSON text messages (see docs/protocol.md)"
                )
            if self.closing:
                continue  # after `close` the rest is ignored, unparsed: the stream is finishing
            parsed = parse_message(msg.get("text") or "")
            if isinstance(parsed, WsClose):
                self.closing = True
            await self.inbox.put(parsed)

    async def _processor(self) -> None:
        while True:
            msg = await self.inbox.get()
            self.processing = True
            try:
                if isinstance(msg, WsConfig):
                    event = self._configure(msg)
                    if event is not None:
                        await self.ws.send_json(event)
                elif isinstance(msg, WsMel):
                    self._started()
                    await self._speak_pending()  # text sent before this mel is heard before it
                    mel = msg.to_array()
                    if mel.ndim >= 1:
                        check_frames(
                            self.utt_frames + int(mel.shape[0]),
                            self.settings.max_mel_frames,
                            "mel (this utterance)",
                        )
                    mel = validate_mel(mel)
                    self.utt_frames += mel.shape[0]
                    self._push(mel)
                elif isinstance(msg, WsText):
                    self._started()
                    await self._add_text(msg.text)
                elif isinstance(msg, WsFlush):
                    self._started()
                    await self._speak_pending()
                    self._finish("flush")
                elif isinstance(msg, WsClose):
                    self._open_stream()
                    await self._speak_pending()
                    self._finish("close")
                    return
            finally:
                self.processing = False

    def _format(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "format": "s16le", "channels": 1}

    def _resampled(self, pcm: bytes | None) -> bytes:
        """PCM at the session's rate; None ends the utterance (the resampler's tail comes out)."""
        if self.sample_rate == self.pool.sample_rate:
            return pcm or b""
        if self.output is None:
            self.output = AudioOutput("pcm", self.sample_rate, self.pool.sample_rate)
        if pcm is not None:
            return self.output.feed(pcm)
        tail, self.output = self.output.finish(), None
        return tail

    async def _send(self, message: dict[str, Any] | bytes) -> None:
        """One message to the client; ClientTooSlow if it stays blocked for ws_send_timeout_s
        (the client stopped reading and the socket buffers are full)."""
        timeout = self.settings.ws_send_timeout_s
        async with self.send_lock:
            try:
                async with asyncio.timeout(timeout):
                    if isinstance(message, bytes):
                        await self.ws.send_bytes(message)
                    else:
                        await self.ws.send_json(message)
            except TimeoutError:
                raise ClientTooSlow(
                    f"client is not reading: a send waited {timeout:g} s (ws_send_timeout_s)"
                ) from None

    async def _send_json(self, event: dict[str, Any]) -> None:
        await self._send(event)

    async def _send_audio(self, pcm: bytes) -> None:
        if not pcm:
            return
        await self._send(pcm)
        now = time.monotonic()
        if self.t_first_audio is None:
            self.t_first_audio = now
        self.samples_sent += len(pcm) // 2
        self.last_activity = now

    async def _sender(self) -> None:
        await self.opened.wait()
        assert self.handle is not None
        while True:
            ev = await self.handle.read()
            if isinstance(ev, Flushed):
                await self._send_audio(self._resampled(None))
                kind = self.finishes.popleft()
                if kind == "flush":
                    await self._send_json({"type": "flushed", "samples": self.samples_sent})
                    continue
                await self._send_json(self._end_message())
                return
            await self._send_audio(self._resampled(ev))

    async def _watch(self) -> None:
        """Close a client that stopped reading; on server drain, finish up and say goodbye."""
        drain = asyncio.ensure_future(self.pool.draining_event.wait())
        opened = asyncio.ensure_future(self.opened.wait())
        try:
            await asyncio.wait({drain, opened}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
        if not self.opened.is_set():  # draining before any input: nothing to finish
            drain.cancel()
            self.draining = True
            return
        assert self.handle is not None
        overflow = asyncio.ensure_future(self.handle.overflow.wait())
        try:
            await asyncio.wait({drain, overflow}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drain.cancel()
            overflow.cancel()
        if self.handle.overflow.is_set():
            raise ClientTooSlow(
                f"client is not reading: more than {self.settings.ws_send_buffer_bytes} bytes of audio "
                "were waiting to be sent"
            )
        self.draining = True
        if not self.closing:
            self.closing = True
            await self.inbox.put(WsClose(type="close"))

    # --- message handling ----------------------------------------------------------------------

    def _started(self) -> None:
        self._open_stream()
        if not self.got_input:
            self.got_input = True
            self.t_first_request = time.monotonic()

    def _open_stream(self) -> None:
        """Take a worker's stream slot (NoCapacity / ClientLimit end the session: 1013)."""
        if self.handle is None:
            clients = self.ws.app.state.clients
            self.handle = clients.open_stream(self.pool, self.client, seed=self.seed)
            self.handle.max_queued_bytes = self.settings.ws_send_buffer_bytes
            self.opened.set()

    def _configure(self, msg: WsConfig) -> dict[str, Any] | None:
        """Apply the config; returns a `format` event to send when it changes the audio's rate
        (no audio has been sent yet: config comes before any input)."""
        if self.got_input:
            raise InvalidInput("config must be the first message of the stream", "type")
        self.seed = msg.seed
        self.voice = msg.voice
        self.speed = msg.speed
        self.timestamps = msg.timestamps
        if msg.voice is not None:
            known = {v.id for v in self.frontend.voices()}
            voice = resolve_voice(msg.voice)
            if known and voice not in known:
                raise InvalidInput(
                    f"unknown voice {msg.voice!r}; known voices: {sorted(known)}", "voice"
                )
        if "sample_rate" in msg.model_fields_set and msg.sample_rate != self.sample_rate:
            self.sample_rate = msg.sample_rate
            return {"type": "format", **self._format()}
        return None

    def _finish(self, kind: str) -> None:
        assert self.handle is not None
        self.finishes.append(kind)
        self.handle.finish()
        self.utt_frames = 0
        self.utt_text_frames = 0

    def _push(self, mel: Any) -> None:
        assert self.handle is not None
        self.handle.push(mel)
        self.frames_pushed += int(mel.shape[0])

    async def _add_text(self, fragment: str) -> None:
        """A fragment of the running text: speak each sentence it completes."""
        check_text(fragment, self.settings.max_text_chars)
        if not self.text_checked:  # a missing Festival or bad speed fails now, not at the end
            self.frontend.check(resolve_voice(self.voice), self.speed)
            self.text_checked = True
        try:
            pieces = self.text.feed(fragment)
        except RunningTextTooLong as exc:
            raise InputTooLarge(str(exc), "text") from exc
        for piece in pieces:
            await self._speak(piece)

    async def _speak_pending(self) -> None:
        for piece in self.text.flush():
            await self._speak(piece)

    async def _speak(self, piece: Piece) -> None:
        """One speakable piece of the running text, a segment at a time as the front end makes
        it; its `words` event goes out before its audio can."""
        spoken = self.frontend.spoken_for_text(
            piece.text,
            voice=resolve_voice(self.voice),
            speed=self.speed,
            continues=piece.continues,
            opens=piece.opens,
        )
        sentinel = object()
        while True:
            item: Any = await asyncio.to_thread(next, spoken, sentinel)
            if item is sentinel:
                return
            mel = validate_mel(item.mel)
            self.utt_text_frames += mel.shape[0]
            check_text_frames(self.utt_text_frames, self.settings.max_text_frames)
            if self.timestamps and item.words:
                await self._send_json(self._words_event(item.words))
            self._push(mel)

    def _words_event(self, words: Any) -> dict[str, Any]:
        """Words of the mel about to be pushed, in seconds of this connection's audio."""
        t0 = self.frames_pushed * SPEC.hop_length / SPEC.sample_rate
        return {
            "type": "words",
            "words": [
                {"word": w.word, "start": round(t0 + w.start, 4), "end": round(t0 + w.end, 4)}
                for w in words
            ],
        }

    def _end_message(self) -> dict[str, Any]:
        assert self.handle is not None
        ttfa = None
        if self.t_first_audio is not None and self.t_first_request is not None:
            ttfa = round((self.t_first_audio - self.t_first_request) * 1000, 2)
        rtf = self.handle.real_time_factor
        return {
            "type": "end",
            "samples": self.samples_sent,
            "time_to_first_audio_ms": ttfa,
            "real_time_factor": None if rtf is None else round(rtf, 5),
        }


def _query_rate(ws: WebSocket, default: int) -> int:
    """`?sample_rate=` of the URL (so the `start` event can carry it), else `default`."""
    given = ws.query_params.get("sample_rate")
    if given is None:
        return default
    if not given.isdigit() or int(given) not in get_args(OutputRate):
        raise InvalidInput(
            f"sample_rate {given!r} is not one of {list(get_args(OutputRate))}", "sample_rate"
        )
    return int(given)


@router.websocket(ROUTE)
async def stream(ws: WebSocket) -> None:
    await Session(ws).run()
