"""The Wyoming server, through the `wyoming` package's own client, against a real server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from serverkit import LiveServer, metric_value
from websockets.asyncio.client import connect
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

pytestmark = pytest.mark.anyio
TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def wy(live_server_factory: Callable[..., LiveServer]) -> LiveServer:
    return live_server_factory(wyoming_port=0)


def port(live: LiveServer) -> int:
    return live.app.state.wyoming.port


async def exchange(live: LiveServer, events: list[Event], until: str) -> list[Event]:
    """Send `events`, then read until an event of type `until` (or an error) arrives."""
    got: list[Event] = []
    async with AsyncTcpClient("127.0.0.1", port(live)) as client:
        for e in events:
            await client.write_event(e)
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                ev = await client.read_event()
                assert ev is not None, f"server closed the connection after {got}"
                got.append(ev)
                if ev.type in (until, "error"):
                    return got


def pcm_of(live: LiveServer, text: str, rate: int = 24000) -> bytes:
    with live.client() as c:
        r = c.post("/v1/synthesize", json={"text": text, "format": "pcm", "sample_rate": rate})
        assert r.status_code == 200, r.text
        return r.content


def utterances(events: list[Event]) -> list[tuple[AudioStart, bytes]]:
    """(audio-start, audio) of each audio-start ... audio-stop in `events`, checked in order."""
    out: list[tuple[AudioStart, bytes]] = []
    start: AudioStart | None = None
    audio = b""
    for ev in events:
        if AudioStart.is_type(ev.type):
            assert start is None, "audio-start inside an utterance"
            start, audio = AudioStart.from_event(ev), b""
        elif AudioChunk.is_type(ev.type):
            assert start is not None, "audio-chunk outside an utterance"
            chunk = AudioChunk.from_event(ev)
            assert (chunk.rate, chunk.width, chunk.channels) == (start.rate, 2, 1)
            audio += chunk.audio
        elif AudioStop.is_type(ev.type):
            assert start is not None
            out.append((start, audio))
            start = None
    assert start is None, "an utterance never stopped"
    return out


async def test_describe_lists_the_voices_and_streaming(wy: LiveServer) -> None:
    (ev,) = await exchange(wy, [Describe().event()], "info")
    info = Info.from_event(ev)
    (tts,) = info.tts
    assert tts.name == "sparrow" and tts.supports_synthesize_streaming and tts.installed
    assert [v.name for v in tts.voices] == ["slt"] and "en_US" in tts.voices[0].languages


async def test_synthesize_streams_the_same_audio_as_http(wy: LiveServer) -> None:
    text = "Hello there. This is Sparrow."
    events = await exchange(wy, [Synthesize(text=text).event()], "audio-stop")
    ((start, audio),) = utterances(events)
    assert (start.rate, start.width, start.channels) == (24000, 2, 1)
    assert sum(AudioChunk.is_type(e.type) for e in events) > 2  # streamed, not one block
    assert audio == pcm_of(wy, text)  # same text, same seed: the HTTP route's audio


async def test_streaming_synthesis_speaks_each_sentence(wy: LiveServer) -> None:
    first, second = "Good morning, my friend.", "The lights are on!"
    words = ["Good", " morn", "ing,", " my", " friend", ".", " ", "The", " lights", " are", " on!"]
    events = [SynthesizeStart(voice=SynthesizeVoice(name="slt")).event()]
    events += [SynthesizeChunk(text=w).event() for w in [*words[:7], ".", " ", *words[7:]]]
    # a streaming client also sends the whole text for servers without streaming: ignored
    events += [Synthesize(text=f"{first} {second}").event(), SynthesizeStop().event()]
    got = await exchange(wy, events, "synthesize-stopped")
    assert SynthesizeStopped.is_type(got[-1].type)
    said = utterances(got)
    assert len(said) == 2 and said[0][1] == pcm_of(wy, first)
    # The second sentence follows audio: it keeps Festival's lead-in as the pause between them,
    # which a text spoken alone loses (50-250 ms, whole frames).
    extra = len(said[1][1]) - len(pcm_of(wy, second))
    assert extra % 600 == 0 and 4 <= extra // 600 <= 20


@pytest.mark.parametrize(
    ("events", "code", "needle"),
    [
        ([Synthesize(text=" ... ").event()], "empty_text", "nothing to speak"),
        ([Synthesize(text="x" * 4097).event()], "too_large", "limit is 4096"),
        (
            [Synthesize(text="Hi.", voice=SynthesizeVoice(name="nobody")).event()],
            "unknown_voice",
            "unknown voice",
        ),
        ([SynthesizeChunk(text="Hi.").event()], "invalid_value", "without synthesize-start"),
        ([SynthesizeStop().event()], "invalid_value", "without synthesize-start"),
        (
            [SynthesizeStart().event(), *[SynthesizeChunk(text="word " * 500).event()] * 2],
            "too_large",
            "max_text_chars",
        ),
        ([Event(type="synthesize", data={"voice": {}})], "invalid_value", "malformed"),
    ],
)
async def test_bad_input_is_an_error_event(
    wy: LiveServer, events: list[Event], code: str, needle: str
) -> None:
    # after the error, the connection still answers
    got = await exchange(wy, [*events, Describe().event()], "info")
    errors = [Error.from_event(e) for e in got if Error.is_type(e.type)]
    assert len(errors) == 1 and errors[0].code == code and needle in errors[0].text, got
    async with AsyncTcpClient("127.0.0.1", port(wy)) as client:
        await client.write_event(Describe().event())
        async with asyncio.timeout(TIMEOUT_S):
            assert Info.is_type((await client.read_event()).type)


async def test_oversized_event_is_refused(wy: LiveServer) -> None:
    async with AsyncTcpClient("127.0.0.1", port(wy)) as client:
        header = b'{"type": "synthesize", "data_length": 999999999999}\n'
        client._writer.write(header)  # type: ignore[union-attr]
        async with asyncio.timeout(TIMEOUT_S):
            ev = await client.read_event()
            assert ev is not None and Error.is_type(ev.type)
            assert "max_body_bytes" in Error.from_event(ev).text
            assert await client.read_event() is None  # and the connection is closed


async def test_no_capacity_is_an_error_event(
    live_server_factory: Callable[..., LiveServer],
) -> None:
    import os

    cores = sorted(os.sched_getaffinity(0))[:1]
    live = live_server_factory(
        wyoming_port=0, cores=cores, max_streams=1, wyoming_sample_rate=16000
    )
    async with connect(live.ws_url) as ws:  # holds the only stream slot
        await ws.recv()
        await ws.send(json.dumps({"type": "flush"}))  # a socket takes its slot at its first input
        await ws.recv()
        got = await exchange(live, [Synthesize(text="Hello.").event()], "audio-stop")
        (err,) = got
        assert Error.from_event(err).code == "no_capacity"
    for _ in range(100):  # the websocket's slot is freed shortly after it closes
        with live.client() as c:
            if c.get("/readyz").json()["streams_in_flight"] == 0:
                break
        await asyncio.sleep(0.05)
    got = await exchange(live, [Synthesize(text="Hello.").event()], "audio-stop")
    ((start, audio),) = utterances(got)
    assert start.rate == 16000 and audio == pcm_of(live, "Hello.", 16000)
    with httpx.Client(base_url=live.url) as c:
        text = c.get("/metrics").text
    ok: dict[str, Any] = {"route": "wyoming", "status": "200"}
    assert metric_value(text, "sparrow_requests_total", ok) == 1
    assert metric_value(text, "sparrow_requests_total", {"route": "wyoming", "status": "429"}) == 1


async def test_per_client_caps_cover_wyoming(
    live_server_factory: Callable[..., LiveServer],
) -> None:
    """Wyoming connections and their streams count against the same per-address caps as the
    HTTP routes and the websocket."""
    live = live_server_factory(wyoming_port=0, max_sockets_per_client=1, max_streams_per_client=1)
    async with AsyncTcpClient("127.0.0.1", port(live)) as held:
        await held.write_event(Describe().event())
        async with asyncio.timeout(TIMEOUT_S):
            assert (await held.read_event()).type == "info"
        (err,) = await exchange(live, [Describe().event()], "info")  # a second connection
        error = Error.from_event(err)
        assert error.code == "client_limit" and "max_sockets_per_client" in error.text
    live = live_server_factory(wyoming_port=0, max_streams_per_client=1)
    async with connect(live.ws_url) as ws:  # one stream in flight from this address
        await ws.recv()
        await ws.send(json.dumps({"type": "flush"}))
        await ws.recv()
        (err,) = await exchange(live, [Synthesize(text="Hello.").event()], "audio-stop")
        error = Error.from_event(err)
        assert error.code == "client_limit" and "max_streams_per_client" in error.text
