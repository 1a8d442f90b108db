"""Integration: a real uvicorn on 127.0.0.1 (ephemeral port), real HTTP, websockets and the
OpenAI client, real pinned workers running the tiny model."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
from serverkit import (
    LiveServer,
    mel_bytes_b64,
    metric_value,
    start_live_server,
    tiny_settings,
    ws_session,
)

pytestmark = [pytest.mark.anyio, pytest.mark.festival, pytest.mark.live]
HOP = 300


def synth_pcm(live: LiveServer, mel: np.ndarray, seed: int) -> bytes:
    with live.client() as c:
        r = c.post(
            "/v1/synthesize", json={"mel": mel_bytes_b64(mel), "seed": seed, "format": "pcm"}
        )
    assert r.status_code == 200, r.text
    return r.content


def test_http_wav_at_24khz_mono(live: LiveServer, make_mel: Callable[..., np.ndarray]) -> None:
    with live.client() as c:
        r = c.post("/v1/synthesize", json={"mel": make_mel(50).tolist(), "seed": 3})
    assert r.status_code == 200
    info = sf.info(io.BytesIO(r.content))
    assert (info.samplerate, info.channels, info.frames) == (24000, 1, 50 * HOP)


def test_openai_client(live: LiveServer) -> None:
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
    resp = client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hello from Sparrow.", response_format="wav"
    )
    data, sr = sf.read(io.BytesIO(resp.content))
    assert sr == 24000 and data.ndim == 1 and data.shape[0] > 12000
    # the streaming variant yields the body as the server produces it
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="One. Two. Three.", response_format="pcm"
    ) as streamed:
        chunks = list(streamed.iter_bytes(chunk_size=None))
    assert sum(map(len, chunks)) % 600 == 0 and sum(map(len, chunks)) > 0
    # OpenAI's own default format: MP3, decodable at 24 kHz
    mp3 = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello from Sparrow.")
    assert mp3.response.headers["content-type"] == "audio/mpeg"
    decoded, sr = sf.read(io.BytesIO(mp3.content))
    assert sr == 24000 and abs(decoded.shape[0] - data.shape[0]) <= 4800
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.speech.create(model="tts-1", voice="alloy", input="x", response_format="wma")  # type: ignore[arg-type]
    assert "response_format" in str(info.value)


async def test_ws_audio_equals_http_audio(
    live: LiveServer, make_mel: Callable[..., np.ndarray]
) -> None:
    mel = make_mel(60, seed=8)
    expected = synth_pcm(live, mel, seed=21)
    events, audio, code, _ = await ws_session(
        live.ws_url,
        [{"type": "config", "seed": 21}, {"type": "mel", **mel_bytes_b64(mel)}, {"type": "close"}],
    )
    assert code == 1000 and events[0]["type"] == "start" and events[-1]["type"] == "end"
    assert audio == expected
    # the same mel streamed in one-frame chunks, as an acoustic model would emit it
    chunked = (
        [{"type": "config", "seed": 21}]
        + [{"type": "mel", "mel": mel[i : i + 1].tolist()} for i in range(60)]
        + [{"type": "close"}]
    )
    _, audio_chunked, code, _ = await ws_session(live.ws_url, chunked)
    assert code == 1000 and audio_chunked == expected


async def test_incremental_audio_arrives_before_the_input_ends(
    live: LiveServer, make_mel: Callable[..., np.ndarray]
) -> None:
    """Mel chunks are vocoded as they arrive: audio comes back while the client is still sending."""
    import json

    from websockets.asyncio.client import connect

    mel = make_mel(40)
    async with connect(live.ws_url) as ws:
        assert json.loads(await ws.recv())["type"] == "start"
        await ws.send(json.dumps({"type": "mel", "mel": mel[:20].tolist()}))
        first = await asyncio.wait_for(
            ws.recv(), 10
        )  # no flush yet: 20 - 3 look-ahead frames ready
        assert isinstance(first, bytes) and len(first) % 600 == 0
        await ws.send(json.dumps({"type": "mel", "mel": mel[20:].tolist()}))
        await ws.send(json.dumps({"type": "close"}))
        total = len(first)
        async for msg in ws:
            if isinstance(msg, bytes):
                total += len(msg)
    assert total == 40 * HOP * 2


async def test_more_streams_than_cores_all_complete_correctly(
    live: LiveServer, make_mel: Callable[..., np.ndarray]
) -> None:
    n_workers = len(live.app.state.pool.workers)
    n = 3 * n_workers + 1
    mels = [make_mel(30 + 7 * i, seed=i) for i in range(n)]
    expected = [synth_pcm(live, m, seed=100 + i) for i, m in enumerate(mels)]

    async def over_ws(i: int) -> bytes:
        _, audio, code, _ = await ws_session(
            live.ws_url,
            [
                {"type": "config", "seed": 100 + i},
                {"type": "mel", **mel_bytes_b64(mels[i])},
                {"type": "close"},
            ],
        )
        assert code == 1000
        return audio

    async def over_http(i: int) -> bytes:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as c:
            r = await c.post(
                "/v1/synthesize",
                json={"mel": mel_bytes_b64(mels[i]), "seed": 100 + i, "format": "pcm"},
            )
            assert r.status_code == 200, r.text
            return r.content

    results = await asyncio.gather(*(over_ws(i) if i % 2 else over_http(i) for i in range(n)))
    assert results == expected
    with live.client() as c:
        assert c.get("/readyz").json()["streams_in_flight"] == 0


async def test_metrics_move_after_streaming(
    live: LiveServer, make_mel: Callable[..., np.ndarray]
) -> None:
    with live.client() as c:
        before = c.get("/metrics").text
    await ws_session(
        live.ws_url, [{"type": "mel", "mel": make_mel(10).tolist()}, {"type": "close"}]
    )
    with live.client() as c:
        after = c.get("/metrics").text
    route = {"route": "/v1/stream"}
    for name, labels in [
        ("sparrow_time_to_first_audio_seconds_count", route),
        ("sparrow_request_duration_seconds_count", route),
        ("sparrow_requests_total", {**route, "status": "1000"}),
        ("sparrow_sample_duration_seconds_count", {}),
        ("sparrow_real_time_factor_count", {}),
    ]:
        assert metric_value(after, name, labels) > metric_value(before, name, labels), name
    assert metric_value(after, "sparrow_stream_capacity") >= 1


def frames_at_full_scale(pcm: bytes) -> int:
    """Frames of received s16le audio with a sample at full scale (+-32767, float +-1.0)."""
    x = np.frombuffer(pcm, dtype="<i2").reshape(-1, HOP)
    return int(np.sum(np.abs(x).max(axis=1) >= 32767))


async def test_redrawn_and_clipped_frames_are_counted(
    live: LiveServer, make_mel: Callable[..., np.ndarray], tmp_path: Path
) -> None:
    """The tiny random model clips every frame (its excitation is white over all 256 classes):
    without clip_retries each clipped frame sent is counted; a copy compiled with clip_retries=2
    redraws within the stream's budget, and the server counts what a stream of the same mel and
    seed counts in-process."""
    from models import compile as comp
    from models.runtime import VocoderRuntime

    mel = make_mel(10)
    names = ("sparrow_frames_redrawn_total", "sparrow_clipped_frames_total")

    async def counted(server: LiveServer) -> tuple[float, float, int]:
        with server.client() as c:
            before = c.get("/metrics").text
        _, audio, code, _ = await ws_session(
            server.ws_url, [{"type": "mel", "mel": mel.tolist()}, {"type": "close"}]
        )
        assert code == 1000 and len(audio) == 2 * HOP * len(mel)
        with server.client() as c:
            after = c.get("/metrics").text
        redrawn, clipped = (metric_value(after, n) - metric_value(before, n) for n in names)
        return redrawn, clipped, frames_at_full_scale(audio)

    redrawn, clipped, seen = await counted(live)
    assert redrawn == 0 and clipped == seen > 0

    plain = VocoderRuntime.load(live.app.state.settings.resolved_model_dir())
    config = dataclasses.replace(plain.config, clip_retries=2)
    guarded_dir = comp.build_artifact(plain.weights, config, tmp_path / "guarded", isas=None)
    guarded = start_live_server(tiny_settings(guarded_dir))
    try:
        redrawn, clipped, seen = await counted(guarded)
    finally:
        guarded.stop()
    stream = VocoderRuntime.load(guarded_dir).open_stream(seed=0)  # a websocket's default seed
    stream.push(mel)
    stream.finish()
    while stream.pending():
        stream.step()
    assert clipped == seen == stream.frames_clipped > 0
    assert redrawn == stream.frames_redrawn >= 2  # the first frame's two, at least


def _festival_children() -> set[int]:
    """Live Festival processes started by this test process (the live servers run in it)."""
    pids = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            comm = (proc / "comm").read_text().strip()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and comm == "festival":
            pids.add(int(proc.name))
    return pids


def test_festival_is_warm_at_start_and_stopped_at_shutdown(
    live_server_factory: Callable[..., LiveServer],
) -> None:
    # The server starts one Festival process beside its workers, so the first text does not
    # wait for one; that process speaks it, and shutdown stops it.
    before = _festival_children()
    live = live_server_factory(festival_processes=1)
    deadline = time.monotonic() + 30
    while not (started := _festival_children() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(started) == 1
    with live.client() as c:
        r = c.post("/v1/synthesize", json={"text": "Hello there."})
    assert r.status_code == 200, r.text
    assert _festival_children() - before == started  # no second start
    live.stop()
    assert not (_festival_children() & started)


def test_text_front_end_metrics(live: LiveServer) -> None:
    with live.client() as c:
        before = c.get("/metrics").text
        r = c.post("/v1/synthesize", json={"text": "One sentence here. And a second one."})
        assert r.status_code == 200, r.text
        after = c.get("/metrics").text
    count = "sparrow_frontend_sentence_seconds_count"
    assert metric_value(after, count) - metric_value(before, count) == 2
    assert metric_value(after, "sparrow_frontend_sentence_seconds_sum") > metric_value(
        before, "sparrow_frontend_sentence_seconds_sum"
    )
    # the request is over: its Festival process is idle and warm, none busy
    assert metric_value(after, "sparrow_frontend_processes", {"state": "busy"}) == 0
    assert metric_value(after, "sparrow_frontend_processes", {"state": "idle"}) >= 1


def test_server_synthesis_setting_changes_the_audio_without_recompiling(
    live: LiveServer,
    live_server_factory: Callable[..., LiveServer],
    make_mel: Callable[..., np.ndarray],
) -> None:
    """SPARROW_SYNTHESIS puts settings over the voice's own: the same module and weights, the
    same mel and seed, other audio (one envelope pass on the tiny model, whose own is none)."""
    mel = make_mel(40, seed=3)
    tuned = live_server_factory(synthesis='{"envelope_passes": 1}')
    plain, passed = synth_pcm(live, mel, seed=4), synth_pcm(tuned, mel, seed=4)
    assert len(plain) == len(passed) and plain != passed
    assert synth_pcm(tuned, mel, seed=4) == passed  # deterministic
