"""Integration: the official `openai` client against a real uvicorn, as voice-agent frameworks and
chat front ends call an OpenAI-compatible speech server: SSE, every format streamed, any rate."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
from openai._streaming import SSEDecoder
from serverkit import LiveServer, mel_bytes_b64, ws_session

pytestmark = pytest.mark.anyio
RATES = (8000, 16000, 22050, 24000, 44100, 48000)
LONG_TEXT = " ".join(f"Sentence number {i} of a long reply." for i in range(1, 31))


def client_for(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)


def test_client_fields_ignored_or_used(live: LiveServer) -> None:
    client = client_for(live)
    plain = client.audio.speech.create(
        model="gpt-4o-mini-tts-2025-12-15",
        voice="alloy",
        input="Hello there.",
        response_format="wav",
    )
    # instructions=None is what wrappers forward; extra_body carries fields OpenAI may add
    with_extras = client.audio.speech.create(
        model="tts-1",
        voice={"id": "slt"},
        input="Hello there.",
        response_format="wav",
        instructions=None,
        extra_body={"future_option": True},
    )
    a, sr_a = sf.read(io.BytesIO(plain.content))
    b, sr_b = sf.read(io.BytesIO(with_extras.content))
    assert sr_a == sr_b == 24000 and a.shape == b.shape  # same voice, same text, same length


def test_speed_extremes_move_duration(live: LiveServer) -> None:
    client = client_for(live)
    lengths = {}
    for speed in (0.25, 1.0, 4.0):
        r = client.audio.speech.create(
            model="tts-1",
            voice="alloy",
            input="The quick brown fox jumps.",
            response_format="pcm",
            speed=speed,
        )
        lengths[speed] = len(r.content) // 2
    assert lengths[0.25] > 1.5 * lengths[1.0] > 1.5 * 1.5 * lengths[4.0]


def test_sse_events(live: LiveServer) -> None:
    """stream_format="sse": speech.audio.delta events of base64 audio, then speech.audio.done."""
    client = client_for(live)
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice="alloy",
        input="One. Two. Three.",
        response_format="pcm",
        stream_format="sse",
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(sse.data) for sse in SSEDecoder().iter_bytes(response.iter_bytes())]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "speech.audio.done" and set(kinds[:-1]) == {"speech.audio.delta"}
    assert len(kinds) > 2  # several deltas: audio was sent as it was made
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    done = events[-1]
    usage = done["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["output_tokens"] == round(len(pcm) / 2 / 24000 / 0.0125)
    assert done["bytes"] == len(pcm) and done["sample_rate"] == 24000
    # the same request without SSE gives the same audio (seed 0 on both)
    raw = client.audio.speech.create(
        model="gpt-4o-mini-tts", voice="alloy", input="One. Two. Three.", response_format="pcm"
    )
    assert raw.content == pcm


def test_sse_mp3_deltas_join_into_a_file(live: LiveServer) -> None:
    with (
        live.client() as c,
        c.stream(
            "POST",
            "/v1/audio/speech",
            json={"model": "tts-1", "input": "One. Two.", "stream_format": "sse"},
        ) as r,
    ):
        events = [json.loads(sse.data) for sse in SSEDecoder().iter_bytes(r.iter_bytes())]
    mp3 = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"].endswith("delta"))
    data, sr = sf.read(io.BytesIO(mp3))
    assert sr == 24000 and data.shape[0] > 4800


def _first_bytes_while_running(live: LiveServer, fmt: str) -> tuple[bytes, int]:
    """Read the first body bytes of a 30-sentence reply and, at that moment, how many streams the
    server still has open; then the rest."""
    with (
        live.client() as c,
        c.stream(
            "POST",
            "/v1/audio/speech",
            json={"model": "tts-1", "input": LONG_TEXT, "response_format": fmt},
        ) as r,
    ):
        assert r.status_code == 200, r.read()
        parts = r.iter_bytes()
        first = next(parts)
        with live.client() as probe:
            in_flight = probe.get("/readyz").json()["streams_in_flight"]
        body = first + b"".join(parts)
    return body, in_flight


def decode_with_ffmpeg(body: bytes) -> tuple[int, int]:
    """(samples, rate) of a file as FFmpeg (through PyAV) decodes it: the reader browsers and
    players use, and one that reads a streamed FLAC of unknown length."""
    import av

    with av.open(io.BytesIO(body)) as container:
        frames = list(container.decode(audio=0))
    return sum(f.samples for f in frames), frames[0].sample_rate


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_every_format_streams_and_decodes(live: LiveServer, fmt: str) -> None:
    body, in_flight = _first_bytes_while_running(live, fmt)
    assert in_flight >= 1  # the first bytes came while the utterance was still being made
    if fmt == "pcm":
        samples, rate = len(body) // 2, 24000
    else:
        samples, rate = decode_with_ffmpeg(body)
    if fmt == "opus":
        assert rate == 48000  # Opus always decodes at 48 kHz
        samples //= 2
    else:
        assert rate == 24000
    assert samples > 24000 * 20  # 30 sentences: tens of seconds of audio
    if fmt in ("mp3", "opus", "wav"):
        data, sr = sf.read(io.BytesIO(body))  # libsndfile reads these streamed files too
        assert sr == 24000 and abs(data.shape[0] - samples) < 24000 * 0.2


@pytest.mark.parametrize("rate", RATES)
def test_each_sample_rate_on_the_openai_route(live: LiveServer, rate: int) -> None:
    client = client_for(live)
    base = client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hello there.", response_format="pcm"
    )
    r = client.audio.speech.create(
        model="tts-1",
        voice="alloy",
        input="Hello there.",
        response_format="wav",
        extra_body={"sample_rate": rate},
    )
    assert r.response.headers["x-sample-rate"] == str(rate)
    data, sr = sf.read(io.BytesIO(r.content))
    seconds = len(base.content) / 2 / 24000
    assert sr == rate and abs(data.shape[0] / rate - seconds) < 0.005


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
async def test_streamed_resampling_equals_whole(
    live: LiveServer, make_mel: Callable[..., np.ndarray], rate: int
) -> None:
    """The websocket resamples frame by frame as audio is made; /v1/synthesize resamples the whole
    utterance: same mel and seed give the same samples within rounding."""
    mel = make_mel(40, seed=5)
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as c:
        r = await c.post(
            "/v1/synthesize",
            json={"mel": mel_bytes_b64(mel), "seed": 2, "format": "pcm", "sample_rate": rate},
        )
    assert r.status_code == 200 and r.headers["x-sample-rate"] == str(rate)
    whole = np.frombuffer(r.content, "<i2").astype(np.int32)
    chunks = [{"type": "mel", **mel_bytes_b64(mel[i : i + 3])} for i in range(0, 40, 3)]
    events, audio, code, _ = await ws_session(
        live.ws_url + f"?sample_rate={rate}",
        [{"type": "config", "seed": 2}, *chunks, {"type": "close"}],
    )
    assert code == 1000 and events[0] == {
        "type": "start",
        "sample_rate": rate,
        "format": "s16le",
        "channels": 1,
    }
    streamed = np.frombuffer(audio, "<i2").astype(np.int32)
    assert streamed.shape == whole.shape
    assert np.max(np.abs(streamed - whole)) <= 2  # int16 rounding, nothing at chunk edges
    assert events[-1]["samples"] == streamed.shape[0]


async def test_websocket_config_sets_the_rate(
    live: LiveServer, make_mel: Callable[..., np.ndarray]
) -> None:
    mel = make_mel(20, seed=1)
    events, audio, code, _ = await ws_session(
        live.ws_url,
        [
            {"type": "config", "sample_rate": 16000},
            {"type": "mel", **mel_bytes_b64(mel)},
            {"type": "close"},
        ],
    )
    assert code == 1000 and events[0]["sample_rate"] == 24000
    assert events[1] == {"type": "format", "sample_rate": 16000, "format": "s16le", "channels": 1}
    assert abs(len(audio) // 2 - 20 * 300 * 16000 // 24000) <= 2
    _, _, code, reason = await ws_session(live.ws_url + "?sample_rate=11025", [])
    assert code == 1007 and "sample_rate" in reason
