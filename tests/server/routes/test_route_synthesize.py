"""POST /v1/synthesize through TestClient (real workers, tiny model)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from itertools import pairwise

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from serverkit import mel_bytes_b64

from server.audio import CONTENT_TYPES

pytestmark = pytest.mark.festival

HOP = 300


def synth(client: TestClient, **body: object) -> bytes:
    r = client.post("/v1/synthesize", json=body)
    assert r.status_code == 200, r.text
    return r.content


def test_mel_to_wav(app_client: TestClient, make_mel: Callable[..., np.ndarray]) -> None:
    mel = make_mel(40)
    r = app_client.post("/v1/synthesize", json={"mel": mel.tolist(), "seed": 5})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    data, sr = sf.read(io.BytesIO(r.content), dtype="int16")
    assert sr == 24000 and data.ndim == 1 and data.shape[0] == 40 * HOP
    assert np.abs(data).max() > 0
    assert r.headers["x-sample-rate"] == "24000" and r.headers["x-seed"] == "5"
    assert float(r.headers["x-time-to-first-audio-ms"]) >= 0
    assert float(r.headers["x-real-time-factor"]) > 0


def test_formats_and_mel_forms_agree(
    app_client: TestClient, make_mel: Callable[..., np.ndarray]
) -> None:
    mel = make_mel(25, seed=3)
    pcm = synth(app_client, mel=mel.tolist(), seed=9, format="pcm")
    assert len(pcm) == 25 * HOP * 2
    assert synth(app_client, mel=mel_bytes_b64(mel), seed=9, format="pcm") == pcm
    wav, _ = sf.read(io.BytesIO(synth(app_client, mel=mel.tolist(), seed=9)), dtype="int16")
    flac, sr = sf.read(
        io.BytesIO(synth(app_client, mel=mel.tolist(), seed=9, format="flac")), dtype="int16"
    )
    assert sr == 24000 and wav.tobytes() == pcm == flac.tobytes()
    for fmt in ("mp3", "opus"):  # lossy: same length and rate, close to the PCM
        lossy, sr = sf.read(io.BytesIO(synth(app_client, mel=mel.tolist(), seed=9, format=fmt)))
        assert sr == 24000 and lossy.shape == (25 * HOP,)


def test_seed_decides_the_audio(
    app_client: TestClient, make_mel: Callable[..., np.ndarray]
) -> None:
    mel = make_mel(20).tolist()
    a = synth(app_client, mel=mel, seed=1, format="pcm")
    assert synth(app_client, mel=mel, seed=1, format="pcm") == a
    assert synth(app_client, mel=mel, seed=2, format="pcm") != a


def test_text_with_festival(app_client: TestClient) -> None:
    r = app_client.post(
        "/v1/synthesize", json={"text": "Hello there. This is Sparrow.", "format": "wav"}
    )
    assert r.status_code == 200, r.text
    data, sr = sf.read(io.BytesIO(r.content))
    assert sr == 24000 and data.shape[0] > 24000 * 0.5  # two sentences: well over half a second
    assert data.shape[0] % HOP == 0


@pytest.mark.parametrize(("fmt", "rate"), [("wav", 24000), ("pcm", 16000)])
def test_text_with_timestamps(app_client: TestClient, fmt: str, rate: int) -> None:
    text = "Hello there, my friend. See you soon!"
    body = {"text": text, "format": fmt, "sample_rate": rate, "seed": 2, "speed": 1.3}
    r = app_client.post("/v1/synthesize", json={**body, "timestamps": True})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
    got = r.json()
    audio = base64.b64decode(got["audio"])
    assert audio == synth(app_client, **body)  # the same file as without timestamps
    assert got["sample_rate"] == rate and got["content_type"] == CONTENT_TYPES[fmt]
    words = got["words"]
    assert [w["word"] for w in words] == ["Hello", "there", "my", "friend", "See", "you", "soon"]
    assert all(a["end"] <= b["start"] and b["start"] < b["end"] for a, b in pairwise(words))
    assert 0 <= words[0]["start"] < 0.1  # Festival's lead-in is cut: the first word comes at once
    assert words[-1]["end"] <= got["samples"] / rate
    # the second sentence starts after the first one's audio, pause included
    assert words[4]["start"] - words[3]["end"] > 0.1


GOOD_MEL = np.full((8, 80), -5.0).tolist()


@pytest.mark.parametrize(
    ("mel", "param"),
    [
        ({"data": "!!!", "shape": [1, 80]}, "mel.data"),
        ({"data": "AAAA", "shape": [3, 80]}, "mel.data"),
        ({"data": "", "shape": [-1, 80]}, "mel.shape"),
        ([[0.0] * 79] * 4, "mel"),
    ],
)
def test_bad_mel_names_its_field(app_client: TestClient, mel: object, param: str) -> None:
    r = app_client.post("/v1/synthesize", json={"mel": mel})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["code"] == "invalid_mel"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"text": ""}, 400, "nothing to speak"),
        ({"text": "x" * 5000}, 413, "limit is 4096"),
        ({"mel": [[0.0] * 79] * 4}, 422, "80 bins"),
        ({"mel": [[0.0] * 4] * 80}, 422, "80 bins"),
        ({"mel": [[0.0] * 80] * 2 + [[0.0] * 3]}, 422, "different lengths"),
        ({"mel": []}, 422, "no frames"),
        ({"mel": [[1e6] * 80]}, 422, "outside"),
        ({"mel": {"data": "AAAA", "shape": [3, 80]}}, 422, "needs 960"),
        ({"mel": [[-5.0] * 80] * 12_001}, 413, "limit is 12000"),
        ({"mel": GOOD_MEL, "speed": 1.5}, 422, "speed applies to text input only"),
        ({"mel": GOOD_MEL, "voice": "slt"}, 422, "voice applies to text input only"),
        ({"mel": GOOD_MEL, "timestamps": True}, 422, "timestamps apply to text input only"),
        ({"text": "hi", "timestamps": 1}, 422, "timestamps"),
        ({"mel": GOOD_MEL, "format": "wma"}, 422, "format"),
        ({"mel": GOOD_MEL, "seed": "abc"}, 422, "seed"),
        ({"mel": GOOD_MEL, "seed": -3}, 422, "seed"),
        ({"mel": GOOD_MEL, "seed": True}, 422, "seed: Input should be a valid integer"),
        ({"mel": GOOD_MEL, "seed": "3"}, 422, "seed: Input should be a valid integer"),
        ({"text": "hi", "speed": True}, 422, "speed: Input should be a valid number"),
        ({"text": 123}, 422, "text"),
        ({"text": "hi", "voice": "nobody"}, 400, "unknown voice"),
        ({"text": "hi", "speed": 9.0}, 422, "speed: Input should be less than or equal to 4"),
        ({"text": "hi", "speed": 0.2}, 422, "speed: Input should be greater than or equal to 0.25"),
        ({"text": "hi", "colour": "blue"}, 422, "colour: Extra inputs are not permitted"),
        ({}, 422, "exactly one of 'text' or 'mel'"),
        ({"text": "hi", "mel": GOOD_MEL}, 422, "exactly one of 'text' or 'mel'"),
    ],
)
def test_bad_input_is_a_clear_4xx(
    app_client: TestClient, body: dict, status: int, needle: str
) -> None:
    r = app_client.post("/v1/synthesize", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"], err
    assert set(err) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/v1/synthesize", b'{"text": "hi", "speed": NaN}'),
        ("/v1/audio/speech", b'{"model": "tts-1", "input": "hi", "speed": Infinity}'),
    ],
)
def test_non_finite_speed_is_named(app_client: TestClient, route: str, body: bytes) -> None:
    r = app_client.post(route, content=body, headers={"content-type": "application/json"})
    err = r.json()["error"]
    assert r.status_code == 422 and err["param"] == "speed" and "finite number" in err["message"]


def test_nan_mel(app_client: TestClient) -> None:
    row = ",".join(["NaN"] + ["-5"] * 79)
    r = app_client.post(
        "/v1/synthesize",
        content=f'{{"mel": [[{row}]]}}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and "non-finite" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("content", "headers", "needle"),
    [
        (b"{not json", {"content-type": "application/json"}, "not valid JSON"),
        (b"text=hello", {"content-type": "application/x-www-form-urlencoded"}, "JSON object"),
        (b'"just a string"', {"content-type": "application/json"}, "JSON object"),
    ],
)
def test_non_json_bodies(
    app_client: TestClient, content: bytes, headers: dict, needle: str
) -> None:
    r = app_client.post("/v1/synthesize", content=content, headers=headers)
    assert r.status_code == 422 and needle in r.json()["error"]["message"], r.text


def test_body_over_the_limit_is_413(app_client: TestClient) -> None:
    big = b'{"text": "' + b"a" * (9 * 1024 * 1024) + b'"}'
    r = app_client.post("/v1/synthesize", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["message"]


def test_server_still_serves_after_bad_input(
    app_client: TestClient, make_mel: Callable[..., np.ndarray]
) -> None:
    for body in ({"mel": "nope"}, {"text": None}, {"mel": [[-5.0] * 80], "seed": 1.5}):
        assert app_client.post("/v1/synthesize", json=body).status_code == 422
    inf = '{"mel": [[' + ",".join(["Infinity"] * 80) + "]]}"
    r = app_client.post("/v1/synthesize", content=inf, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert len(synth(app_client, mel=make_mel(4).tolist(), format="pcm")) == 4 * HOP * 2
