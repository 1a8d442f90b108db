"""Integration, when things go wrong: capacity, dead workers, vanished or slow clients, idling.

Each test that needs special settings gets its own real uvicorn + workers (a fork each: cheap).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from serverkit import (
    LiveServer,
    drain_ws,
    mel_bytes_b64,
    metric_value,
    ws_session,
)
from websockets.asyncio.client import ClientConnection, connect

pytestmark = [pytest.mark.anyio, pytest.mark.festival, pytest.mark.live, pytest.mark.slow]
CORES = sorted(os.sched_getaffinity(0))


def readyz(live: LiveServer) -> dict[str, Any]:
    with live.client() as c:
        return c.get("/readyz").json()


def metrics(live: LiveServer) -> str:
    with live.client() as c:
        return c.get("/metrics").text


async def wait_for(
    cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def opened(url: str, hold: bool = False, **kw: Any) -> ClientConnection:
    """A websocket past its `start`; with `hold`, also holding a stream slot (a session takes one
    at its first input: here an empty flush, answered by `flushed`)."""
    ws = await connect(url, max_size=None, **kw)
    assert json.loads(await ws.recv())["type"] == "start"
    if hold:
        await ws.send(json.dumps({"type": "flush"}))
        assert json.loads(await ws.recv())["type"] == "flushed"
    return ws


async def speech_cut_off(
    live: LiveServer, text: str, on_chunk: Callable[[int], None] | None = None
) -> int:
    """Stream /v1/audio/speech as pcm; it must start with a 200 and end cut off (never like a
    complete file). `on_chunk` sees the byte count before each chunk; returns the bytes got."""
    got = 0
    async with (
        httpx.AsyncClient(base_url=live.url, timeout=30) as c,
        c.stream(
            "POST",
            "/v1/audio/speech",
            json={"model": "tts-1", "input": text, "response_format": "pcm"},
        ) as r,
    ):
        assert r.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            async for chunk in r.aiter_bytes():
                if on_chunk is not None:
                    on_chunk(got)
                got += len(chunk)
    return got


async def test_over_capacity_is_refused_and_admitted_streams_keep_real_time(
    server_with: Callable[..., LiveServer], make_mel: Callable[..., np.ndarray]
) -> None:
    live = server_with(max_streams=1, initial_buffer_s=0.5)
    held = [await opened(live.ws_url, hold=True) for _ in CORES]  # one per worker: all full
    try:
        await wait_for(lambda: readyz(live)["streams_in_flight"] == len(CORES), what="admission")
        # a socket that asks for nothing takes no slot; its first input is refused
        idle = await opened(live.ws_url)
        events, _, code, reason = await ws_session(live.ws_url, [{"type": "flush"}])
        assert code == 1013 and "capacity" in events[-1]["message"] and "capacity" in reason
        async with httpx.AsyncClient(base_url=live.url) as c:
            r = await c.post("/v1/synthesize", json={"mel": make_mel(4).tolist()})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "no_capacity"
        # the admitted streams run in real time (mel fed at 4x real time) with no late frame
        mel = make_mel(400)
        for i in range(0, 400, 20):
            for ws in held:
                await ws.send(json.dumps({"type": "mel", **mel_bytes_b64(mel[i : i + 20])}))
            await asyncio.sleep(20 * 0.0125 / 4)
        for ws in held:
            await ws.send(json.dumps({"type": "close"}))
        for ws in held:
            events, audio = await drain_ws(ws)
            assert events[-1]["type"] == "end" and len(audio) == 400 * 600
        await idle.close()
    finally:
        for ws in held:
            await ws.close()
    text = metrics(live)
    assert metric_value(text, "sparrow_late_frames_total") == 0
    assert metric_value(text, "sparrow_streams_refused_total", {"reason": "capacity"}) == 2
    assert (
        metric_value(text, "sparrow_requests_total", {"route": "/v1/synthesize", "status": "429"})
        == 1
    )


@pytest.mark.skipif(len(CORES) < 2, reason="needs two cores: one worker dies, the other goes on")
async def test_killed_worker_fails_its_streams_others_finish_and_it_comes_back(
    server_with: Callable[..., LiveServer], make_mel: Callable[..., np.ndarray]
) -> None:
    # Equal capacities make placement deterministic: a -> first core, b -> second, http -> first.
    # capacity_recovery_s=0 keeps them as measured: on a loaded host late frames would otherwise
    # lower one worker's capacity and move the HTTP stream (this test counts streams, not time).
    live = server_with(cores=CORES[:2], max_streams=2, capacity_recovery_s=0)
    a = await opened(live.ws_url)
    b = await opened(live.ws_url)
    long_mel = make_mel(12_000)

    async def long_http() -> httpx.Response:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as c:
            return await c.post(
                "/v1/synthesize", json={"mel": mel_bytes_b64(long_mel), "format": "pcm"}
            )

    http = asyncio.ensure_future(long_http())
    try:
        await a.send(json.dumps({"type": "mel", "mel": make_mel(20).tolist()}))
        await b.send(json.dumps({"type": "mel", "mel": make_mel(20).tolist()}))
        await wait_for(lambda: readyz(live)["streams_in_flight"] == 3, what="three streams")
        victim = readyz(live)["workers"][0]
        assert victim["core"] == CORES[0] and victim["streams"] == 2
        os.kill(victim["pid"], signal.SIGKILL)

        events, _ = await asyncio.wait_for(drain_ws(a), 30)
        assert a.close_code == 1011 and "died" in events[-1]["message"]
        r = await asyncio.wait_for(http, 30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "worker_died"

        await b.send(json.dumps({"type": "close"}))  # the other worker's stream is unaffected
        events, audio = await asyncio.wait_for(drain_ws(b), 30)
        assert b.close_code == 1000 and events[-1]["type"] == "end" and len(audio) == 20 * 600
    finally:
        http.cancel()
        await a.close()
        await b.close()
    await wait_for(lambda: readyz(live)["ready"], 60, "the restarted worker")
    status = readyz(live)
    restarted = next(w for w in status["workers"] if w["core"] == victim["core"])
    assert restarted["restarts"] == 1 and restarted["pid"] != victim["pid"]
    assert (
        metric_value(metrics(live), "sparrow_worker_restarts_total", {"core": str(victim["core"])})
        == 1
    )
    events, audio, code, _ = await ws_session(
        live.ws_url, [{"type": "mel", "mel": make_mel(5).tolist()}, {"type": "close"}]
    )
    assert code == 1000 and len(audio) == 5 * 600


async def test_client_disconnect_frees_the_worker(
    live: LiveServer, make_mel: Callable[..., np.ndarray]
) -> None:
    samples = lambda: metric_value(metrics(live), "sparrow_samples_generated_total")
    long_mel = mel_bytes_b64(make_mel(12_000))
    full = 12_000 * 300

    # websocket: vanish mid-stream (TCP closed without a close handshake)
    start = samples()
    ws = await opened(live.ws_url)
    await ws.send(json.dumps({"type": "mel", **long_mel}))
    await ws.send(json.dumps({"type": "flush"}))
    assert isinstance(await ws.recv(), bytes)
    ws.transport.abort()
    await wait_for(lambda: readyz(live)["streams_in_flight"] == 0, 10, "ws stream release")
    await asyncio.sleep(0.3)
    assert samples() - start < full  # the worker dropped it, it did not finish the work

    # HTTP: a client that gives up on a long /v1/synthesize
    start = samples()
    async with httpx.AsyncClient(base_url=live.url) as c:
        with pytest.raises(httpx.TimeoutException):
            await c.post(
                "/v1/synthesize", json={"mel": long_mel}, timeout=httpx.Timeout(30, read=0.3)
            )
    await wait_for(lambda: readyz(live)["streams_in_flight"] == 0, 10, "http stream release")
    await asyncio.sleep(0.3)
    assert samples() - start < full

    # HTTP streaming: the OpenAI route, closed after the first chunk
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
        text = " ".join(["This sentence keeps the stream busy for a while."] * 6)
        async with c.stream(
            "POST",
            "/v1/audio/speech",
            json={"model": "tts-1", "input": text, "response_format": "pcm"},
        ) as r:
            assert r.status_code == 200
            async for _ in r.aiter_bytes():
                break
    await wait_for(lambda: readyz(live)["streams_in_flight"] == 0, 15, "speech stream release")


async def test_client_that_does_not_read_is_closed_4429(
    server_with: Callable[..., LiveServer], make_mel: Callable[..., np.ndarray]
) -> None:
    live = server_with(ws_send_buffer_bytes=64 * 1024)
    ws = await opened(live.ws_url, max_queue=1)  # the client library stops reading when full
    await ws.send(json.dumps({"type": "mel", **mel_bytes_b64(make_mel(12_000))}))
    await ws.send(json.dumps({"type": "flush"}))
    # not reading: once the socket buffers are full the server must drop the stream (bounded
    # memory) rather than queue all 7 MB of audio
    await wait_for(lambda: readyz(live)["streams_in_flight"] == 0, 30, "slow client dropped")
    events, audio = await asyncio.wait_for(drain_ws(ws), 30)
    assert ws.close_code == 4429 and "not reading" in events[-1]["message"]
    assert len(audio) < 12_000 * 600


async def test_idle_websocket_is_closed_4408(server_with: Callable[..., LiveServer]) -> None:
    live = server_with(idle_timeout_s=0.5)
    t0 = time.monotonic()
    events, _, code, _ = await ws_session(live.ws_url, [])
    assert code == 4408 and "idle" in events[-1]["message"]
    assert 0.4 < time.monotonic() - t0 < 10
    assert readyz(live)["streams_in_flight"] == 0


async def test_busy_websocket_is_not_idle(
    server_with: Callable[..., LiveServer], make_mel: Callable[..., np.ndarray]
) -> None:
    """A stream that is still sending audio is not idle, even with no client message."""
    live = server_with(idle_timeout_s=0.3)
    events, audio, code, _ = await ws_session(
        live.ws_url, [{"type": "mel", **mel_bytes_b64(make_mel(3000))}, {"type": "flush"}]
    )
    # it idles out only after the flush was delivered
    assert code == 4408 and [e["type"] for e in events] == ["start", "flushed", "error"]
    assert len(audio) == 3000 * 600


async def test_worker_death_mid_http_stream_truncates_the_body(
    server_with: Callable[..., LiveServer],
) -> None:
    """A streamed body whose worker dies is cut off (never ends like a complete file)."""
    live = server_with(cores=CORES[:1])
    text = " ".join(f"Sentence number {i} keeps this stream going." for i in range(8))

    def kill_the_worker(got: int) -> None:
        if got == 0:
            os.kill(readyz(live)["workers"][0]["pid"], signal.SIGKILL)

    assert await speech_cut_off(live, text, kill_the_worker) > 0
    await wait_for(lambda: readyz(live)["ready"], 60, "the restarted worker")


async def test_a_bad_message_followed_at_once_by_another_closes_1007_and_frees_the_slot(
    server_with: Callable[..., LiveServer],
) -> None:
    """The error must end the session whatever the client sent right behind the bad message: the
    receiver may be holding the next message just as the session is torn down."""
    live = server_with(idle_timeout_s=30)
    nan_mel = json.dumps({"type": "mel", "mel": [[float("nan")] * 80]})  # json writes NaN
    follow_ups = [{"type": "flush"}, {"type": "close"}, {"type": "mel", "mel": [[-5.0] * 80]}]

    async def bad_session(i: int) -> tuple[int | None, list[Any]]:
        ws = await opened(live.ws_url)
        await ws.send(nan_mel)
        await ws.send(json.dumps(follow_ups[i % len(follow_ups)]))
        events, _ = await asyncio.wait_for(drain_ws(ws), 5)  # not a hang until idle_timeout_s
        return ws.close_code, events

    for code, events in await asyncio.gather(*(bad_session(i) for i in range(12))):
        assert code == 1007 and "non-finite" in events[-1]["message"], (code, events)
    await wait_for(lambda: readyz(live)["streams_in_flight"] == 0, 10, "slots freed")


async def test_text_that_reads_out_too_long_is_refused_cleanly_on_every_route(
    server_with: Callable[..., LiveServer],
) -> None:
    """max_text_frames bounds the audio one text may make. Where the answer is not yet under
    way it is a 413 / close 1009 naming the setting; a streamed answer already sent its 200, so
    its body is cut off (never a complete-looking file), and it counts as the 413 it is."""
    live = server_with(cores=CORES[:1], max_text_frames=150)  # "One." is ~60 frames
    text = "One. Two. Three. Four."
    with live.client() as c:
        r = c.post("/v1/synthesize", json={"text": text})
        assert r.status_code == 413, r.text
        err = r.json()["error"]
        assert err["param"] == "text" and "max_text_frames" in err["message"]
        assert c.post("/v1/synthesize", json={"text": "One."}).status_code == 200
    events, _, code, _ = await ws_session(live.ws_url, [{"type": "text", "text": text}])
    assert code == 1009 and "max_text_frames" in events[-1]["message"], events
    # The OpenAI route streams: when the limit is found after its first audio the body is cut
    # off (never a complete-looking file); when the front end outruns the vocoder's first frame
    # it is found before, and the answer is a clean 413. Either way it counts as a 413.
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
        try:
            r = await c.post(
                "/v1/audio/speech",
                json={"model": "tts-1", "input": text, "response_format": "pcm"},
            )
        except httpx.RemoteProtocolError:
            pass  # a 200 whose body was cut off
        else:
            assert r.status_code == 413, r.text
            err = r.json()["error"]
            assert err["param"] == "input" and "max_text_frames" in err["message"]
    await wait_for(lambda: readyz(live)["streams_in_flight"] == 0, 10, "slots freed")
    text_metrics = metrics(live)
    for route in ("/v1/audio/speech", "/v1/synthesize"):
        labels = {"route": route, "status": "413"}
        assert metric_value(text_metrics, "sparrow_requests_total", labels) == 1, route


def test_oversized_or_undecodable_bodies_name_the_body(
    server_with: Callable[..., LiveServer],
) -> None:
    live = server_with(max_body_bytes=4096)
    big = json.dumps({"mel": [[-5.0] * 80] * 20}).encode()  # ~10 kB
    with live.client() as c:
        declared = c.post(
            "/v1/synthesize", content=big, headers={"content-type": "application/json"}
        )
        # no Content-Length: the limit is found while reading (chunked transfer encoding)
        chunked = c.post(
            "/v1/synthesize",
            content=iter([big[i : i + 1000] for i in range(0, len(big), 1000)]),
            headers={"content-type": "application/json"},
        )
        nested = c.post(
            "/v1/synthesize",
            content=b'{"mel": ' + b"[" * 1500 + b"]" * 1500 + b"}",
            headers={"content-type": "application/json"},
        )
    for r in (declared, chunked):
        assert r.status_code == 413, r.text
        err = r.json()["error"]
        assert (err["code"], err["param"]) == ("too_large", "body"), err
        assert "4096-byte" in err["message"]
    assert nested.status_code == 422, nested.text
    assert nested.json()["error"]["param"] == "body"
    assert readyz(live)["ready"]
