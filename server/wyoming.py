"""The Wyoming protocol (Home Assistant's voice pipeline) on its own TCP port, beside HTTP.

Started by the app's lifespan (server/app.py) when `wyoming_port` is set, so it shares the
worker pool (admission: a synthesis takes a stream slot, or gets an `error` event), the text
front end and the metrics (route label `wyoming`). Events are the `wyoming` package's own:

- `describe` -> `info` with one TTS program, its voices, `supports_synthesize_streaming`;
- `synthesize` -> `audio-start`, `audio-chunk`s as the vocoder makes them, `audio-stop`;
- `synthesize-start`, `synthesize-chunk`s, `synthesize-stop` -> the chunks are fragments of one
  running text (models/frontend/assembler.py, as on the websocket): each sentence is spoken as
  soon as its end is known, as its own `audio-start` ... `audio-stop`, then `synthesize-stopped`.
  The `synthesize` a streaming client also sends (for servers without streaming) is ignored.
- bad input (empty text, unknown voice, a running text over max_text_chars, no capacity) ->
  an `error` event with a code (server/errors.py's), and the connection stays usable.

Audio is 16-bit mono PCM at `wyoming_sample_rate` (24 kHz, the vocoder's, by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncEventHandler
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from models.frontend.assembler import Piece, RunningTextTooLong, TextAssembler, speakable
from models.frontend.festival_frontend import OPENING_WORDS, EmptyText
from server.audio import AudioOutput
from server.catalog import resolve_voice
from server.errors import ClientLimit, IdleTimeout, InputTooLarge, InvalidInput, map_error
from server.synthesis import check_text, check_text_frames
from server.workers.pool import Flushed, StreamHandle

logger = logging.getLogger(__name__)

ROUTE = "wyoming"
OPENING_CLAUSE = 5  # as the websocket's (server/streaming/text.py)
VERSION = "0.1.0"
MAX_HEADER_BYTES = 64 * 1024  # an event's JSON line (asyncio's default stream limit)
# Wyoming requires a URL; Sparrow has no public home page, so the program names its front end's.
ATTRIBUTION = Attribution(name="Sparrow", url="http://festvox.org/")
FESTIVAL = Attribution(name="Festival, CMU Arctic SLT voice", url="http://festvox.org/")


class WyomingServer:
    """A TCP listener; each connection is a `WyomingHandler` on the app's shared state."""

    def __init__(self, state: Any, host: str, port: int, sample_rate: int) -> None:
        self.state = state
        self.host = host
        self.requested_port = port
        self.sample_rate = sample_rate
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (the requested one, or the one the OS picked for 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._connected, self.host, self.requested_port, limit=MAX_HEADER_BYTES
        )
        logger.info("Wyoming server on %s:%d", self.host, self.port)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        handler = WyomingHandler(reader, writer, self)
        try:
            with self.state.clients.socket(handler.client):
                await handler.run()
        except ClientLimit as exc:  # the address holds max_sockets_per_client connections
            await handler._error(exc)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client left
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]

    async def stop(self) -> None:
        """Stop listening and end every connection (their streams free their slots)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)


class WyomingHandler(AsyncEventHandler):
    """One client connection: events in order, one synthesis at a time."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: WyomingServer
    ) -> None:
        super().__init__(reader, writer)
        state = server.state
        self.pool = state.pool
        self.frontend = state.frontend
        self.settings = state.settings
        self.metrics = state.metrics
        self.sample_rate = server.sample_rate
        self.clients = state.clients  # the same per-address caps as HTTP and the websocket
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "unknown"
        self.stream: _Synthesis | None = None  # the streaming synthesis under way
        self.text: TextAssembler | None = None

    async def run(self) -> None:
        """Read events (bounded in size, with the idle timeout) until the client leaves."""
        try:
            while True:
                try:
                    async with asyncio.timeout(self.settings.idle_timeout_s):
                        event = await read_event(self.reader, self.settings.max_body_bytes)
                except TimeoutError:
                    if self.stream is not None:
                        self.stream.cancel()
                    idle = IdleTimeout(f"no event for {self.settings.idle_timeout_s:g} s")
                    await self._error(idle)
                    return
                except InvalidInput as exc:
                    await self._error(exc)
                    return
                if event is None:
                    return
                await self.handle_event(event)
        finally:
            if self.stream is not None:
                self.stream.cancel()
            self.writer.close()

    async def handle_event(self, event: Event) -> bool:
        try:
            if Describe.is_type(event.type):
                await self.write_event(self._info().event())
            elif Synthesize.is_type(event.type):
                if self.stream is None:  # a streaming client's copy of the text is ignored
                    await self._synthesize(Synthesize.from_event(event))
            elif SynthesizeStart.is_type(event.type):
                await self._start(SynthesizeStart.from_event(event))
            elif SynthesizeChunk.is_type(event.type):
                await self._chunk(SynthesizeChunk.from_event(event))
            elif SynthesizeStop.is_type(event.type):
                await self._stop()
            else:
                logger.debug("Wyoming event %r ignored", event.type)
        except (KeyError, TypeError) as exc:
            await self._error(InvalidInput(f"malformed {event.type} event: {exc!r}"))
        except Exception as exc:  # noqa: BLE001 - every failure is reported as an error event
            if self.stream is not None:
                self.stream.cancel()
                self.stream = None
            await self._error(exc)
        return True

    # --- events --------------------------------------------------------------------------------

    def _info(self) -> Info:
        voices = [
            TtsVoice(
                name=v.id,
                attribution=FESTIVAL,
                installed=True,
                description=v.name,
                version=None,
                languages=[v.language.replace("-", "_"), v.language.split("-")[0]],
            )
            for v in self.frontend.voices()
        ]
        program = TtsProgram(
            name="sparrow",
            attribution=ATTRIBUTION,
            installed=True,
            description="Sparrow: neural speech on CPU cores",
            version=VERSION,
            voices=voices,
            supports_synthesize_streaming=True,
        )
        return Info(tts=[program])

    async def _synthesize(self, request: Synthesize) -> None:
        check_text(request.text, self.settings.max_text_chars)
        if not speakable(request.text):
            raise EmptyText("the text has nothing to speak (no letters or digits)")
        synthesis = self._open(request.voice)
        try:
            await synthesis.say(Piece(request.text))
            await synthesis.finish()
        finally:
            synthesis.cancel()

    async def _start(self, request: SynthesizeStart) -> None:
        if self.stream is not None:
            raise InvalidInput("synthesize-start while a streaming synthesis is under way")
        self.stream = self._open(request.voice)
        self.text = TextAssembler(self.settings.max_text_chars, (OPENING_CLAUSE, OPENING_WORDS))

    async def _chunk(self, chunk: SynthesizeChunk) -> None:
        if self.stream is None or self.text is None:
            raise InvalidInput("synthesize-chunk without synthesize-start")
        check_text(chunk.text, self.settings.max_text_chars)
        try:
            pieces = self.text.feed(chunk.text)
        except RunningTextTooLong as exc:
            raise InputTooLarge(str(exc), "text") from exc
        for piece in pieces:
            await self.stream.say(piece)

    async def _stop(self) -> None:
        if self.stream is None or self.text is None:
            raise InvalidInput("synthesize-stop without synthesize-start")
        stream, self.stream = self.stream, None
        try:
            for piece in self.text.flush():
                await stream.say(piece)
            await stream.finish()
        finally:
            stream.cancel()
        await self.write_event(SynthesizeStopped().event())

    def _open(self, voice: SynthesizeVoice | None) -> _Synthesis:
        name = resolve_voice(voice.name if voice is not None else None)
        self.frontend.check(name)  # unknown voice or no Festival: an error before any audio
        return _Synthesis(self, name)

    async def _error(self, exc: BaseException) -> None:
        m = map_error(exc)
        if m.code == "internal_error":
            logger.error("Wyoming request failed: %r", exc, exc_info=exc)
        else:
            logger.info("Wyoming error %s: %s", m.code, m.message)
        self.metrics.requests.labels(route=ROUTE, status=str(m.status)).inc()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.write_event(Error(text=m.message, code=m.code).event())


class _Synthesis:
    """One synthesis on one admitted stream: pieces of text in, each spoken as an utterance
    (`audio-start` ... `audio-stop`) while the next piece's front end runs."""

    def __init__(self, handler: WyomingHandler, voice: str) -> None:
        self.h = handler
        self.voice = voice
        self.t_start = time.monotonic()
        # NoCapacity / NotReady / ClientLimit
        self.handle: StreamHandle = handler.clients.open_stream(handler.pool, handler.client)
        self.pieces: asyncio.Queue[Piece | None] = asyncio.Queue()
        self.spoken = 0  # utterances fed to the vocoder (each ends with a Flushed)
        self.flushed = 0  # utterances whose audio is all sent
        self.progress = asyncio.Event()  # set by the sender at each utterance's end
        self.first_audio: float | None = None
        self.feeder = asyncio.ensure_future(self._feed())
        self.sender = asyncio.ensure_future(self._send())

    async def say(self, piece: Piece) -> None:
        await self.pieces.put(piece)

    async def _feed(self) -> None:
        """Speak the queued pieces in order; a failure fails the stream (the sender raises it)."""
        try:
            frames = 0  # of the sentence under way (an opening and its rest are one)
            while (piece := await self.pieces.get()) is not None:
                spoken = self.h.frontend.spoken_for_text(
                    piece.text,
                    voice=self.voice,
                    continues=piece.continues,
                    opens=piece.opens,
                    leads=self.spoken == 0 and frames == 0,  # the stream's first words
                )
                frames += await push_spoken(
                    self.handle, spoken, self.h.settings.max_text_frames, frames
                )
                if not piece.opens:  # a sentence is one utterance: audio-start ... audio-stop
                    self.handle.finish()
                    self.spoken += 1
                    frames = 0
        except Exception as exc:  # noqa: BLE001 - handed to the reader, which maps it
            self.handle.fail(exc)

    async def _send(self) -> None:
        """Audio of each utterance as it comes; runs until cancelled or the stream fails."""
        rate, width = self.h.sample_rate, 2
        output: AudioOutput | None = None
        while True:
            ev = await self.handle.read()
            if output is None:
                output = AudioOutput("pcm", rate, self.h.pool.sample_rate)
                await self.h.write_event(AudioStart(rate=rate, width=width, channels=1).event())
            if isinstance(ev, Flushed):
                tail = output.finish()
                if tail:
                    await self._chunk(tail)
                await self.h.write_event(AudioStop().event())
                output = None
                self.flushed += 1
                self.progress.set()
                continue
            pcm = output.feed(ev)
            if pcm:
                await self._chunk(pcm)

    async def _chunk(self, pcm: bytes) -> None:
        if self.first_audio is None:
            self.first_audio = time.monotonic()
        chunk = AudioChunk(rate=self.h.sample_rate, width=2, channels=1, audio=pcm)
        await self.h.write_event(chunk.event())

    async def finish(self) -> None:
        """Wait until every piece said so far has been sent; record the request's metrics."""
        await self.pieces.put(None)
        await self.feeder  # a failure is handed to the stream: the sender raises it below
        while self.flushed < self.spoken:
            self.progress.clear()
            waiter = asyncio.ensure_future(self.progress.wait())
            await asyncio.wait({waiter, self.sender}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if self.sender.done():
                self.sender.result()  # raises the stream's error
                raise RuntimeError("the Wyoming sender stopped before the audio was sent")
        metrics = self.h.metrics
        if self.first_audio is not None:
            metrics.time_to_first_audio.labels(route=ROUTE).observe(self.first_audio - self.t_start)
        metrics.requests.labels(route=ROUTE, status="200").inc()
        metrics.request_duration.labels(route=ROUTE).observe(time.monotonic() - self.t_start)

    def cancel(self) -> None:
        """Stop feeding and sending, and free the stream's slot (safe to call twice)."""
        self.feeder.cancel()
        self.sender.cancel()
        self.handle.close()


async def push_spoken(handle: StreamHandle, spoken: Any, max_frames: int, frames: int) -> int:
    """Push each mel of `spoken` as the front end makes it; return the frames pushed."""
    total = frames
    sentinel = object()
    while True:
        item: Any = await asyncio.to_thread(next, spoken, sentinel)
        if item is sentinel:
            return total - frames
        total += item.mel.shape[0]
        check_text_frames(total, max_frames)
        handle.push(item.mel)


async def read_event(reader: asyncio.StreamReader, max_bytes: int) -> Event | None:
    """The next event (None at EOF): `wyoming.event.async_read_event` with bounds, so a client
    cannot make the server buffer an unbounded data or payload section."""
    try:
        line = await reader.readline()
    except ValueError as exc:  # asyncio's limit on one line
        raise InvalidInput(f"event header longer than {MAX_HEADER_BYTES} bytes") from exc
    if not line:
        return None
    try:
        header = json.loads(line)
        kind = header["type"]
        data = header.get("data") or {}
        data_length = int(header.get("data_length") or 0)
        payload_length = int(header.get("payload_length") or 0)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"malformed event header: {exc}") from exc
    if not isinstance(kind, str) or not isinstance(data, dict):
        raise InvalidInput("malformed event header: 'type' must be a string, 'data' an object")
    for name, n in (("data_length", data_length), ("payload_length", payload_length)):
        if not 0 <= n <= max_bytes:
            raise InvalidInput(f"event {name} {n} is outside 0..{max_bytes} (max_body_bytes)")
    if data_length:
        try:
            extra = json.loads(await reader.readexactly(data_length))
        except ValueError as exc:
            raise InvalidInput(f"malformed event data: {exc}") from exc
        if not isinstance(extra, dict):
            raise InvalidInput("malformed event data: not a JSON object")
        data.update(extra)
    payload = await reader.readexactly(payload_length) if payload_length else None
    return Event(type=kind, data=data, payload=payload)
