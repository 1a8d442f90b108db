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
    [("wav", "audio/wav"), ("flac", "audio/flac"), ("mp3", "audio/mpeg"), ("opus", "audio/ogg")],
)
def test_speech_decodes(app_client: TestClient, fmt: str, content_type: str) -> None:
    r = speech(app_client, voice="alloy", response_format=fmt)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == content_type
    data, sr = sf.read(io.BytesIO(r.content))
    assert sr == 24000 and data.ndim == 1 and data.shape[0] > 2400


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
        ({"response_format": "aac"}, 400, "response_format", "not supported"),
        ({"stream_format": "sse"}, 400, "stream_format", "only 'audio'"),
        ({"model": "gpt-9"}, 404, "model", "does not exist"),
        ({"voice": "nobody"}, 400, "voice", "unknown voice"),
        ({"speed": 3.0}, 400, "speed", "between"),
        ({"speed": 9.0}, 422, "speed", "less than or equal"),
        ({"input": ""}, 422, "input", "input is empty"),
        ({"input": "y" * 4097}, 413, "input", "limit is 4096"),
        ({"input": "\U0001f642 \u200b"}, 400, "input", "nothing to speak"),
        ({"instructions": "whisper"}, 422, "instructions", "Extra inputs"),
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
