"""Integration: the API key guard, and text routes when the Festival front end is missing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
from serverkit import LiveServer, start_live_server, tiny_settings, ws_session

pytestmark = [pytest.mark.anyio, pytest.mark.live]
KEY = "test-key-123"


@pytest.fixture(scope="module")
def keyed(tiny_model_dir: Path) -> Iterator[LiveServer]:
    live = start_live_server(tiny_settings(tiny_model_dir, api_key=KEY))
    yield live
    live.stop()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/models", None),
        ("GET", "/v1/voices", None),
        ("POST", "/v1/synthesize", {"mel": [[-5.0] * 80] * 4}),
        ("POST", "/v1/audio/speech", {"model": "tts-1", "input": "hi"}),
    ],
)
def test_api_routes_need_the_key(
    keyed: LiveServer, method: str, path: str, body: dict | None
) -> None:
    with keyed.client() as c:
        missing = c.request(method, path, json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["type"] == "authentication_error"
        wrong = c.request(method, path, json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "invalid API key" in wrong.json()["error"]["message"]
        ok = c.request(method, path, json=body, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/", "/static/app.js"])
def test_probes_metrics_and_demo_stay_open(keyed: LiveServer, path: str) -> None:
    with keyed.client() as c:
        assert c.get(path).status_code == 200


async def test_websocket_key_by_header_or_query(
    keyed: LiveServer, make_mel: Callable[..., np.ndarray]
) -> None:
    events, _, code, _ = await ws_session(keyed.ws_url, [])
    assert code == 1008 and "API key" in events[-1]["message"]
    talk = [{"type": "mel", "mel": make_mel(4).tolist()}, {"type": "close"}]
    _, audio, code, _ = await ws_session(f"{keyed.ws_url}?api_key={KEY}", talk)
    assert code == 1000 and len(audio) == 4 * 600
    _, audio, code, _ = await ws_session(
        keyed.ws_url, talk, additional_headers={"Authorization": f"Bearer {KEY}"}
    )
    assert code == 1000 and len(audio) == 4 * 600


def test_openai_client_sends_the_key(keyed: LiveServer) -> None:
    good = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=KEY, max_retries=0)
    assert good.audio.speech.create(
        model="tts-1", voice="alloy", input="Hi.", response_format="pcm"
    ).content
    bad = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


# --- no Festival on PATH ---------------------------------------------------------------------------


@pytest.fixture
def no_festival(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """PATH without text2wave, as on a host where the Debian packages are not installed."""
    monkeypatch.setenv("PATH", str(tmp_path))


def test_text_routes_name_the_missing_packages(
    live: LiveServer, no_festival: None, make_mel: Callable[..., np.ndarray]
) -> None:
    with live.client() as c:
        r = c.post("/v1/synthesize", json={"text": "Hello."})
        assert r.status_code == 503
        err = r.json()["error"]
        assert err["code"] == "text_frontend_unavailable"
        assert "festival" in err["message"] and "festvox-us-slt-hts" in err["message"]
        r = c.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hello."})
        assert r.status_code == 503 and "apt-get install" in r.json()["error"]["message"]
        voices = c.get("/v1/voices").json()
        assert voices["text_available"] is False and voices["data"] == []
        assert "festvox-us-slt-hts" in voices["message"]
        # mel input does not need the front end
        assert c.post("/v1/synthesize", json={"mel": make_mel(4).tolist()}).status_code == 200


async def test_websocket_text_without_festival(live: LiveServer, no_festival: None) -> None:
    events, _, code, _ = await ws_session(live.ws_url, [{"type": "text", "text": "Hello."}])
    assert code == 1011 and "festival" in events[-1]["message"]
