"""POST /v1/audio/speech (OpenAI-compatible) through TestClient."""

from __future__ import annotations

import io

import pytest
import soundfile as sf
from fastapi.testclient import TestClient

pytestmark = pytest.mark.festival


def speech(client: TestClient, **body: object):
    return client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hello world.", **body})


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("wav", "audio/wav"),
        ("flac", "audio/flac"),
        ("mp3", "audio/mpeg"),
        ("opus", "audio/ogg"),
        ("aac", "audio/aac"),
    ],
)
def test_speech_decodes(app_client: TestClient, fmt: str, content_type: str) -> None:
    import av  # FFmpeg: reads a streamed FLAC of unknown length, and ADTS AAC

    r = speech(app_client, voice="alloy", response_format=fmt)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == content_type
    with av.open(io.BytesIO(r.content)) as container:
        frames = list(container.decode(audio=0))
    samples, rate = sum(f.samples for f in frames), frames[0].sample_rate
    assert rate == (48000 if fmt == "opus" else 24000) and samples > rate // 10


def test_pcm_is_raw_s16le_and_streamed(app_client: TestClient) -> None:
    with app_client.stream(
        "POST",
        "/v1/audio/speech",
        json={"model": "sparrow", "input": "One. Two.", "response_format": "pcm"},
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "audio/pcm"
        assert "content-length" not in r.headers  # streamed as made, not buffered
        body = b"".join(r.iter_bytes())
    assert len(body) > 0 and len(body) % 600 == 0  # whole 300-sample frames of 2 bytes


def test_model_name_of_the_server_works(app_client: TestClient) -> None:
    name = app_client.get("/v1/models").json()["data"][0]["id"]
    assert speech(app_client, model=name, response_format="pcm").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "param", "needle"),
    [
        ({"response_format": "wma"}, 400, "response_format", "not supported"),
        ({"stream_format": "chunks"}, 422, "stream_format", "'audio' or 'sse'"),
        ({"model": "gpt-9"}, 404, "model", "does not exist"),
        ({"model": "tts-2"}, 404, "model", "does not exist"),
        ({"voice": "nobody"}, 400, "voice", "unknown voice"),
        ({"voice": {"id": "nobody"}}, 400, "voice", "unknown voice"),
        ({"voice": {"name": "alloy"}}, 422, "voice", "id"),
        ({"speed": 9.0}, 422, "speed", "less than or equal"),
        ({"speed": 0.1}, 422, "speed", "greater than or equal"),
        ({"speed": "fast"}, 422, "speed", "valid number"),
        ({"sample_rate": 12345}, 422, "sample_rate", "8000"),
        ({"input": ""}, 422, "input", "input is empty"),
        ({"input": "y" * 4097}, 413, "input", "limit is 4096"),
        ({"input": "\U0001f642 \u200b"}, 400, "input", "nothing to speak"),
    ],
)
def test_errors_have_openai_shape(
    app_client: TestClient, body: dict, status: int, param: str, needle: str
) -> None:
    r = speech(app_client, **body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and needle in err["message"]
    assert err["type"] in ("invalid_request_error",)


def test_missing_fields(app_client: TestClient) -> None:
    r = app_client.post("/v1/audio/speech", json={"input": "hi"})
    assert r.status_code == 422 and "model: Field required" in r.json()["error"]["message"]


def test_nan_speed_is_refused(app_client: TestClient) -> None:
    """JSON has no NaN, but Python's json module writes one; it must not reach the front end."""
    r = app_client.post(
        "/v1/audio/speech",
        content=b'{"model": "tts-1", "input": "Hi.", "speed": NaN}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["error"]["param"] == "speed"


def test_default_format_is_mp3_as_openai(app_client: TestClient) -> None:
    r = speech(app_client)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"
    data, sr = sf.read(io.BytesIO(r.content))
    assert sr == 24000 and data.shape[0] > 2400


@pytest.mark.parametrize(
    "extra",
    [
        {"instructions": "Speak like a pirate."},
        {"instructions": None},
        {"voice": {"id": "alloy"}},
        {"voice": {"id": "slt"}},
        {"model": "gpt-4o-mini-tts-2025-12-15"},
        {"model": "tts-1-hd-1106"},
        {"model": "tts-1-1106"},
        {"some_future_field": {"nested": [1, 2]}, "user": "u-1"},
        {"speed": 1},
    ],
)
def test_what_openai_clients_send_is_accepted(app_client: TestClient, extra: dict) -> None:
    r = speech(app_client, response_format="pcm", **extra)
    assert r.status_code == 200, r.text
    assert len(r.content) > 0 and len(r.content) % 2 == 0


def test_every_response_carries_a_request_id(app_client: TestClient) -> None:
    made = speech(app_client, response_format="pcm").headers["x-request-id"]
    assert len(made) >= 16
    echoed = app_client.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": "Hi.", "response_format": "pcm"},
        headers={"x-request-id": "client-req-42"},
    )
    assert echoed.headers["x-request-id"] == "client-req-42"
    # errors too, and a header that could split a log line is replaced, not echoed
    bad = app_client.post(
        "/v1/audio/speech", json={"input": "hi"}, headers={"x-request-id": "a b\tc"}
    )
    assert bad.status_code == 422 and bad.headers["x-request-id"] not in ("a b\tc", "")
    assert app_client.get("/healthz").headers["x-request-id"]
