"""One websocket stream connection (server/routes/stream.py has the protocol).

A session runs four tasks: the receiver (parses messages, enforces the idle timeout), the processor
(applies them in order; text goes through the front end one sentence at a time, server/streaming/
text.py), the sender (audio and events to the client) and a watcher for the bounded send buffer and
for draining. A session takes a worker's stream slot when it first asks for audio (its first `mel`,
`text`, `flush` or `close`), not when it connects, so idle sockets hold no capacity; each client
address may hold at most `max_sockets_per_client` sockets. A send blocked for `ws_send_timeout_s`
(the client stopped reading) ends the session with 4429, as does unsent audio past
`ws_send_buffer_bytes`. Errors: an `error` event, then a close code chosen by server/errors.py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from models.dsp.features import validate_mel
from server.audio import AudioOutput
from server.catalog import resolve_voice
from server.clients import client_of
from server.deps import check_api_key
from server.errors import ClientTooSlow, IdleTimeout, InvalidInput, UnsupportedData, map_error
from server.schemas import WsClose, WsConfig, WsFlush, WsMel, WsText
from server.streaming.messages import parse_message, query_rate
from server.streaming.text import RunningText, words_event
from server.synthesis import check_frames
from server.workers.pool import Flushed, StreamHandle

logger = logging.getLogger(__name__)
CLOSE_WAIT_S = 10.0
"""How long an error/close frame may wait for a client that stopped reading before we give up."""


class Session:
    """One connection; `route` labels its metrics."""

    def __init__(self, ws: WebSocket, route: str) -> None:
        state = ws.app.state
        self.ws = ws
        self.route = route
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
        self.sample_rate = int(self.pool.sample_rate)
        self.output: AudioOutput | None = None  # the current utterance's resampler
        # the running text of `text` messages, with the config's voice and speed
        self.text = RunningText(
            self.frontend, self.settings.max_text_chars, self.settings.max_text_frames
        )
        self.timestamps = False  # send `words` events
        self.frames_pushed = 0  # mel frames sent to the vocoder on this connection
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
            self.sample_rate = query_rate(self.ws, self.sample_rate)
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
                    self.metrics.time_to_first_audio.labels(route=self.route).observe(
                        self.t_first_audio - self.t_first_request
                    )
            self.metrics.requests.labels(route=self.route, status=status).inc()
            self.metrics.request_duration.labels(route=self.route).observe(
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
                    await self.text.flush(
                        self._emit
                    )  # text sent before this mel is heard before it
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
                    await self.text.feed(msg.text, self._emit)
                elif isinstance(msg, WsFlush):
                    self._started()
                    await self.text.flush(self._emit)
                    self._finish("flush")
                elif isinstance(msg, WsClose):
                    self._open_stream()
                    await self.text.flush(self._emit)
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
        self.text.voice = msg.voice
        self.text.speed = msg.speed
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
        self.text.end_utterance()

    def _push(self, mel: Any) -> None:
        assert self.handle is not None
        self.handle.push(mel)
        self.frames_pushed += int(mel.shape[0])

    async def _emit(self, mel: np.ndarray, words: Sequence[Any]) -> None:
        """One segment of the running text: its `words` event goes out before its audio can."""
        if self.timestamps and words:
            await self._send_json(words_event(words, self.frames_pushed))
        self._push(mel)

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
