"""The load test's client: concurrent websocket / HTTP / OpenAI-route utterances against a running
server, each timed as a listener hears it (what is measured and why: server/loadtest/cli.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from models.dsp.features import SPEC
from server.loadtest.report import Progress

REFUSED_WS_CODES = {1013}
REFUSED_HTTP_STATUS = {429, 503}
_EPS_S = 1e-6  # float rounding slack when comparing arrival and playback times


def mel_message(mel: np.ndarray) -> str:
    """The compact websocket form: base64 float32 little-endian + shape."""
    data = base64.b64encode(np.ascontiguousarray(mel, dtype="<f4").tobytes()).decode("ascii")
    return json.dumps({"type": "mel", "data": data, "shape": list(mel.shape)})


# --- measurement -------------------------------------------------------------------------------


def count_late_frames(
    arrivals: Sequence[tuple[float, int]],
    buffer_s: float,
    sample_rate: int = SPEC.sample_rate,
    hop: int = SPEC.hop_length,
) -> tuple[int, int]:
    """Frames that arrive after their playback time, and all frames.

    arrivals: (arrival time in s, samples in the message), in arrival order. Playback starts
    `buffer_s` after the first arrival and runs at `sample_rate`; frame f (samples
    [f * hop, (f + 1) * hop)) must have arrived by start + f * hop / sample_rate.
    """
    if not arrivals:
        return 0, 0
    start = arrivals[0][0] + buffer_s
    position = 0  # samples received before this message
    late = 0
    for t, n in arrivals:
        first_frame = position // hop
        position += n
        last_frame = (position - 1) // hop if n > 0 else first_frame - 1
        for f in range(first_frame, last_frame + 1):
            if t > start + f * hop / sample_rate + _EPS_S:
                late += 1
            else:
                # Later frames of this message play even later: none of them is late.
                break
    total = math.ceil(position / hop)
    return late, total


@dataclass
class StreamResult:
    ok: bool = False
    refused: bool = False
    error: str | None = None
    ttfa_s: float | None = None
    samples: int = 0
    wall_s: float = 0.0
    server_rtf: float | None = None
    client_rtf: float | None = None
    late_frames: int = 0
    frames: int = 0
    arrivals: list[tuple[float, int]] = field(default_factory=list, repr=False)
    t_text_ready: float | None = None  # --tokens-ms: when the first sentence's end was sent

    def finish(self, t0: float, buffer_s: float) -> StreamResult:
        self.wall_s = time.perf_counter() - t0
        if self.arrivals:
            self.ttfa_s = self.arrivals[0][0] - (self.t_text_ready or t0)
            self.late_frames, self.frames = count_late_frames(self.arrivals, buffer_s)
            audio_s = self.samples / SPEC.sample_rate
            if audio_s > 0:
                self.client_rtf = (self.arrivals[-1][0] - self.arrivals[0][0]) / audio_s
        return self


@dataclass(frozen=True)
class Plan:
    url: str
    streams: int
    requests: int | None
    duration: float | None
    http: bool
    mel: np.ndarray | None
    text: str | None
    api_key: str | None
    voice: str | None
    buffer_s: float
    timeout: float
    chunk_frames: int
    retry_after_s: float = 1.0
    openai_format: str | None = None  # POST /v1/audio/speech with this response_format
    tokens_ms: float | None = None  # --text sent a word per message, this far apart


def _ws_url(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if not path.endswith("/v1/stream"):
        path += "/v1/stream"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _http_base(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def _auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def run_ws_stream(plan: Plan, seed: int) -> StreamResult:
    """One utterance over the websocket; never raises for server-side failures."""
    res = StreamResult()
    t0 = time.perf_counter()
    sending: asyncio.Future[None] | None = None
    try:
        async with asyncio.timeout(plan.timeout):
            async with websockets.connect(
                _ws_url(plan.url),
                additional_headers=_auth_headers(plan.api_key),
                max_size=None,
                open_timeout=plan.timeout,
                ping_interval=None,
            ) as ws:
                config: dict[str, Any] = {"type": "config", "seed": seed}
                if plan.voice:
                    config["voice"] = plan.voice
                await ws.send(json.dumps(config))
                if plan.mel is not None:
                    for i in range(0, plan.mel.shape[0], plan.chunk_frames):
                        await ws.send(mel_message(plan.mel[i : i + plan.chunk_frames]))
                elif plan.tokens_ms is not None:
                    # Sent while the audio is read: audio that comes before the last token is
                    # timed as it arrives, not when the sending is over.
                    sending = asyncio.ensure_future(_send_tokens_and_close(ws, plan, res))
                else:
                    await ws.send(json.dumps({"type": "text", "text": plan.text}))
                if sending is None:
                    await ws.send(json.dumps({"type": "close"}))
                async for msg in ws:
                    if isinstance(msg, bytes):
                        n = len(msg) // 2
                        res.samples += n
                        res.arrivals.append((time.perf_counter(), n))
                        continue
                    event = json.loads(msg)
                    kind = event.get("type")
                    if kind == "end":
                        res.server_rtf = event.get("real_time_factor")
                        res.ok = True
                    elif kind == "error":
                        res.error = str(event.get("message", "error"))
                # The server closed the socket; its close code says why.
                code = ws.close_code
                if code in REFUSED_WS_CODES:
                    res.refused, res.ok, res.error = True, False, None
                elif code not in (1000, None) or not res.ok:
                    res.ok = False
                    res.error = res.error or f"closed {code} {ws.close_reason or ''}".strip()
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
        if code in REFUSED_WS_CODES:
            res.refused, res.ok, res.error = True, False, None
        else:
            res.ok = False
            res.error = f"closed {code} {exc.rcvd.reason if exc.rcvd else ''}".strip()
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in REFUSED_HTTP_STATUS:
            res.refused = True
        else:
            res.error = f"handshake HTTP {status}"
    except TimeoutError:
        res.error = f"timeout after {plan.timeout:g} s"
    except (OSError, InvalidHandshake) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        if sending is not None and not sending.done():
            sending.cancel()
    if sending is not None and sending.done() and not sending.cancelled():
        sending.exception()  # a send to a socket the server closed: already reported above
    return res.finish(t0, plan.buffer_s)


async def _send_tokens_and_close(ws: Any, plan: Plan, res: StreamResult) -> None:
    res.t_text_ready = await send_tokens(ws, plan.text or "", plan.tokens_ms or 0.0)
    await ws.send(json.dumps({"type": "close"}))


async def send_tokens(ws: Any, text: str, interval_ms: float) -> float:
    """Send `text` a word at a time (" word" tokens, as an LLM streams), `interval_ms` apart;
    return when the token that makes the first sentence's end known (the one after its `.`,
    `!` or `?`: the server needs the following space) was sent."""
    tokens = re.findall(r"\s*\S+", text)
    ready: float | None = None
    for i, token in enumerate(tokens):
        if i:
            await asyncio.sleep(interval_ms / 1000.0)
        await ws.send(json.dumps({"type": "text", "text": token}))
        if ready is None and i and tokens[i - 1].rstrip("\"')]")[-1:] in ".!?":
            ready = time.perf_counter()
    return ready if ready is not None else time.perf_counter()


def _pcm_samples_in_wav_prefix(buf: bytes) -> int | None:
    """Byte offset of PCM data in a RIFF/WAVE header, or None while the header is incomplete."""
    if len(buf) < 12:
        return None
    if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
        return 0  # raw PCM
    pos = 12
    while pos + 8 <= len(buf):
        cid, size = buf[pos : pos + 4], int.from_bytes(buf[pos + 4 : pos + 8], "little")
        if cid == b"data":
            return pos + 8
        pos += 8 + size
    return None


async def _post_stream(
    client: httpx.AsyncClient,
    plan: Plan,
    path: str,
    body: dict[str, Any],
    read: Callable[[httpx.Response, StreamResult], Awaitable[None]],
) -> StreamResult:
    """POST `body` to `path` and let `read` take the 200's streamed body; refusals, other
    statuses, timeouts and transport errors go into the result (it never raises for them)."""
    res = StreamResult()
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(plan.timeout):
            async with client.stream(
                "POST", path, json=body, headers=_auth_headers(plan.api_key)
            ) as resp:
                if resp.status_code in REFUSED_HTTP_STATUS:
                    res.refused = True
                    await resp.aread()
                elif resp.status_code != 200:
                    detail = (await resp.aread())[:200].decode("utf-8", "replace")
                    res.error = f"HTTP {resp.status_code} {detail}"
                else:
                    await read(resp, res)
                    if not res.ok:
                        res.error = "empty audio"
    except TimeoutError:
        res.error = f"timeout after {plan.timeout:g} s"
    except httpx.HTTPError as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    return res.finish(t0, plan.buffer_s)


async def run_http_request(client: httpx.AsyncClient, plan: Plan, seed: int) -> StreamResult:
    """One utterance via POST /v1/synthesize (WAV, streamed); never raises for server failures."""
    body: dict[str, Any] = {"seed": seed, "format": "wav"}
    if plan.mel is not None:
        body["mel"] = np.round(plan.mel, 3).tolist()
    else:
        body["text"] = plan.text
    if plan.voice and plan.text is not None:
        body["voice"] = plan.voice  # voices belong to the text front end

    async def read(resp: httpx.Response, res: StreamResult) -> None:
        header = b""
        offset: int | None = None
        async for chunk in resp.aiter_bytes():
            now = time.perf_counter()
            if offset is None:
                header += chunk
                offset = _pcm_samples_in_wav_prefix(header)
                if offset is None:
                    continue
                chunk = header[offset:]
            n = len(chunk) // 2
            if n:
                res.samples += n
                res.arrivals.append((now, n))
        res.ok = res.samples > 0
        rtf = resp.headers.get("X-Real-Time-Factor")
        res.server_rtf = float(rtf) if rtf else None

    return await _post_stream(client, plan, "/v1/synthesize", body, read)


async def run_openai_request(client: httpx.AsyncClient, plan: Plan) -> StreamResult:
    """One text via POST /v1/audio/speech in `plan.openai_format`, read as it streams. TTFA is
    the first body byte; for `pcm` every frame's arrival counts (late frames), for the encoded
    formats only the first byte and the total (their sample count needs a decoder)."""
    body = {"model": "tts-1", "input": plan.text, "response_format": plan.openai_format}
    if plan.voice:
        body["voice"] = plan.voice
    pcm = plan.openai_format == "pcm"

    async def read(resp: httpx.Response, res: StreamResult) -> None:
        got = 0
        async for chunk in resp.aiter_bytes():
            now = time.perf_counter()
            got += len(chunk)
            n = len(chunk) // 2 if pcm else 0
            if pcm or not res.arrivals:
                res.arrivals.append((now, n))
                res.samples += n
        res.ok = got > 0

    return await _post_stream(client, plan, "/v1/audio/speech", body, read)


async def run_load(plan: Plan, progress: Progress) -> tuple[list[StreamResult], float]:
    """Run `plan.streams` concurrent slots until the request budget or the duration is spent."""
    results: list[StreamResult] = []
    started = 0
    t0 = time.perf_counter()
    deadline = t0 + plan.duration if plan.duration else None

    def take() -> int | None:
        nonlocal started
        if plan.requests is not None and started >= plan.requests:
            return None
        if deadline is not None and time.perf_counter() >= deadline:
            return None
        started += 1
        return started - 1

    async with httpx.AsyncClient(
        base_url=_http_base(plan.url),
        timeout=plan.timeout,
        limits=httpx.Limits(max_connections=plan.streams, max_keepalive_connections=plan.streams),
    ) as client:

        async def slot() -> None:
            while (seed := take()) is not None:
                if plan.openai_format is not None:
                    res = await run_openai_request(client, plan)
                elif plan.http:
                    res = await run_http_request(client, plan, seed)
                else:
                    res = await run_ws_stream(plan, seed)
                results.append(res)
                progress.add(res)
                if res.refused:
                    # As a client honouring the server's Retry-After would, instead of a storm of
                    # refused connects that eats the very core being measured. Never past the
                    # deadline: the run ends on time.
                    wait = plan.retry_after_s
                    if deadline is not None:
                        wait = min(wait, max(0.0, deadline - time.perf_counter()))
                    await asyncio.sleep(wait)

        async def ticker() -> None:
            while True:
                progress.draw()
                await asyncio.sleep(0.25)

        tick = asyncio.create_task(ticker())
        try:
            await asyncio.gather(*(slot() for _ in range(plan.streams)))
        finally:
            tick.cancel()
            progress.draw(final=True)
    return results, time.perf_counter() - t0
