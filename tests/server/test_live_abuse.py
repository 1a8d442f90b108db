"""Hostile and careless HTTP clients against a real uvicorn: what one client sends must not stall
or starve another. Count-based assertions only (statuses, decode counts, closed sockets); latency
under attack is measured by `sparrow loadtest`, not here."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import socket
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from serverkit import LiveServer, drain_ws, mel_bytes_b64, metric_value, ws_session

from server.logs import RedactSecrets, redact
from server.openapi import STATUSES, ErrorResponse

KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def keyed(live_server_factory: Callable[..., LiveServer]) -> LiveServer:
    return live_server_factory(
        api_key=KEY, header_timeout_s=1.0, body_timeout_s=1.0, parse_timeout_s=10.0
    )


def _decodes(live: LiveServer) -> float:
    with live.client(headers={"authorization": f"Bearer {KEY}"}) as c:
        return metric_value(c.get("/metrics").text, "sparrow_body_decode_seconds_count")


def test_no_key_no_body_decoded(keyed: LiveServer, make_mel: Callable[..., np.ndarray]) -> None:
    """A 6 MiB mel list without the key is refused before a byte of it is decoded."""
    body = json.dumps({"mel": make_mel(9000).tolist()}).encode()
    assert len(body) > 5 * 2**20
    before = _decodes(keyed)
    with keyed.client() as c:
        for headers in ({}, {"authorization": "Bearer wrong"}):
            r = c.post("/v1/synthesize", content=body, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = c.post("/v1/audio/speech?api_key=nope", content=body)
        assert r.status_code == 401
    assert _decodes(keyed) == before
    with keyed.client(headers={"authorization": f"Bearer {KEY}"}) as c:
        small = c.post("/v1/synthesize", json={"mel": make_mel(8).tolist(), "format": "pcm"})
    assert small.status_code == 200 and _decodes(keyed) == before + 1


def _raw(live: LiveServer) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", live.port), timeout=15)
    return s


def _read_all(s: socket.socket) -> bytes:
    """Everything until the server closes the connection; a timeout (the server kept it open)
    fails the test."""
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return out
        except TimeoutError:
            pytest.fail(f"the server kept the connection open; read so far: {out[:200]!r}")
        if not chunk:
            return out
        out += chunk


def test_slow_body_gets_408(keyed: LiveServer) -> None:
    """A body dripped a byte at a time is refused when body_timeout_s runs out, however steadily
    the bytes come."""
    with _raw(keyed) as s:
        s.sendall(
            b"POST /v1/synthesize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {KEY}\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"mel": '
        )
        s.settimeout(0.25)
        reply = b""
        for _ in range(60):  # a byte every 0.25 s: 92 bytes would take 23 s
            try:
                s.sendall(b" ")
                reply += s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if reply:
                break
        s.settimeout(15)
        reply += _read_all(s)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"body_timeout_s" in reply


def test_slow_headers_are_closed(keyed: LiveServer) -> None:
    with _raw(keyed) as s:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")  # headers never finish
        assert _read_all(s) == b""  # closed by the server (header_timeout_s), nothing answered
    with _raw(keyed) as s:  # and a connection that sends nothing at all
        assert _read_all(s) == b""
    with keyed.client() as c:  # the server is fine
        assert c.get("/healthz").status_code == 200


def test_trailing_slash_served_in_place(keyed: LiveServer) -> None:
    with keyed.client(headers={"authorization": f"Bearer {KEY}", "host": "evil.example"}) as c:
        r = c.get("/v1/models/", follow_redirects=False)
    assert r.status_code == 200 and "location" not in r.headers
    assert r.json()["object"] == "list"


def test_coercion_and_shape_bounds(keyed: LiveServer) -> None:
    auth = {"authorization": f"Bearer {KEY}"}
    cases = [
        ({"mel": [[True] * 80] * 8}, "mel"),
        ({"mel": [["1.5"] * 80] * 8}, "mel"),
        ({"mel": {"data": "", "shape": [2**62, 0]}}, "mel.shape"),
        ({"mel": {"data": "", "shape": [2**62, 80]}}, "mel.data"),
    ]
    with keyed.client(headers=auth) as c:
        for body, param in cases:
            r = c.post("/v1/synthesize", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["error"]["param"].startswith(param), r.text


def test_errors_match_the_openapi_document(keyed: LiveServer) -> None:
    """Every error status the document lists for a route has the one error schema, and live
    errors validate against it."""
    with keyed.client(headers={"authorization": f"Bearer {KEY}"}) as c:
        doc = c.get("/openapi.json").json()
        for (method, path), statuses in STATUSES.items():
            responses = doc["paths"][path][method]["responses"]
            for status in statuses:
                schema = responses[str(status)]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}
        assert "HTTPValidationError" not in doc["components"]["schemas"]
        synth = doc["paths"]["/v1/synthesize"]["post"]["requestBody"]["content"]
        assert synth["application/json"]["schema"]["$ref"].endswith("/SynthesizeRequest")
        live_errors = [
            c.post("/v1/synthesize", json={"seed": -1, "text": "x"}),
            c.post("/v1/audio/speech", json={"model": "gpt-9", "input": "x"}),
            c.post(
                "/v1/audio/speech", json={"model": "tts-1", "input": "x", "response_format": "x"}
            ),
            c.get("/v1/models/gpt-9"),
            c.post("/v1/synthesize", content=b"x" * (9 * 2**20)),
        ]
    with keyed.client() as c:
        live_errors.append(c.get("/v1/voices"))
    for r in live_errors:
        assert str(r.status_code) in {"401", "404", "400", "413", "422"}
        ErrorResponse.model_validate(r.json())


def access_record() -> logging.LogRecord:
    """A record as uvicorn's access logger makes it: the URL is one of the arguments."""
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/v1/voices?api_key=" + KEY, "1.1", 200),
        None,
    )


def test_keys_never_reach_a_log_line() -> None:
    assert redact("GET /v1/stream?api_key=abc&x=1") == "GET /v1/stream?api_key=***&x=1"
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    record = access_record()
    RedactSecrets().filter(record)
    assert KEY not in record.getMessage() and "api_key=***" in record.getMessage()


def test_request_ids_and_redaction_in_the_served_log_config() -> None:
    from server.logs import log_config

    config = log_config()
    assert all(h["filters"] == ["request_id", "redact"] for h in config["handlers"].values())
    logging.config.dictConfig(config)
    handler = logging.getLogger("uvicorn.access").handlers[0]
    record = access_record()
    assert all(f.filter(record) for f in handler.filters)
    line = handler.format(record)
    assert KEY not in line and "[-]" in line


def test_a_pool_that_cannot_start_fails_health(
    live_server_factory: Callable[..., LiveServer],
) -> None:
    """No worker ready within start_timeout_s: /healthz turns 503 with the cause (and
    `sparrow serve` exits non-zero, tests/server/test_serve.py), instead of healthy for ever."""
    live = live_server_factory(wait=False, start_timeout_s=0.001)
    with live.client() as c:
        for _ in range(200):
            r = c.get("/healthz")
            if r.status_code == 503:
                break
            time.sleep(0.05)
    assert r.status_code == 503 and "start_timeout_s" in r.json()["error"]


# --- websockets ---------------------------------------------------------------------------------


async def _start(url: str, **kw: Any) -> Any:
    from websockets.asyncio.client import connect

    ws = await connect(url, max_size=None, **kw)
    assert json.loads(await ws.recv())["type"] == "start"
    return ws


@pytest.mark.anyio
async def test_idle_sockets_hold_no_slot_and_are_capped_per_client(
    live_server_factory: Callable[..., LiveServer], make_mel: Callable[..., np.ndarray]
) -> None:
    live = live_server_factory(max_streams=1, max_sockets_per_client=3)
    idle = [await _start(live.ws_url) for _ in range(3)]
    try:
        with live.client() as c:
            assert c.get("/readyz").json()["streams_in_flight"] == 0
            r = c.post("/v1/synthesize", json={"mel": make_mel(8).tolist(), "format": "pcm"})
            assert r.status_code == 200  # idle sockets took no capacity
        events, _, code, _ = await ws_session(live.ws_url, [])
        assert code == 1013 and "max_sockets_per_client" in events[-1]["message"]
    finally:
        for ws in idle:
            await ws.close()
    for _ in range(100):  # places come back once the server has seen the sockets close
        events, _, code, _ = await ws_session(live.ws_url, [{"type": "close"}])
        if code != 1013:
            break
        await asyncio.sleep(0.05)
    assert code == 1000 and events[-1]["type"] == "end"


@pytest.mark.anyio
async def test_messages_after_close_are_ignored(
    live: LiveServer, make_mel: Callable[..., np.ndarray]
) -> None:
    mel = make_mel(20)
    events, audio, code, _ = await ws_session(
        live.ws_url,
        [{"type": "mel", **mel_bytes_b64(mel)}, {"type": "close"}, "not json", {"type": "x"}],
    )
    assert code == 1000 and events[-1]["type"] == "end" and len(audio) == 20 * 600


@pytest.mark.anyio
async def test_failing_messages_leave_no_unretrieved_task_errors(
    live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    import gc

    bad = json.dumps({"type": "mel", "mel": [[float("nan")] * 80]})

    async def session() -> int | None:
        ws = await _start(live.ws_url)
        await ws.send(bad)
        await ws.send(bad)
        await ws.send("{")
        await asyncio.wait_for(drain_ws(ws), 10)
        return ws.close_code

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        codes = await asyncio.gather(*(session() for _ in range(12)))
        await asyncio.sleep(0.5)
        gc.collect()
        await asyncio.sleep(0.1)
    assert codes == [1007] * 12
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


@pytest.mark.anyio
async def test_a_client_that_stops_reading_is_closed_by_the_send_timeout(
    live_server_factory: Callable[..., LiveServer], make_mel: Callable[..., np.ndarray]
) -> None:
    """With a send buffer too large to fill, a blocked send still ends the session (4429)."""
    live = live_server_factory(ws_send_buffer_bytes=512 * 2**20, ws_send_timeout_s=1.0)
    ws = await _start(live.ws_url, max_queue=1)  # the client library stops reading when full
    await ws.send(json.dumps({"type": "mel", **mel_bytes_b64(make_mel(12_000))}))
    await ws.send(json.dumps({"type": "flush"}))
    for _ in range(600):
        with live.client() as c:
            if c.get("/readyz").json()["streams_in_flight"] == 0:
                break
        await asyncio.sleep(0.05)
    events, audio = await asyncio.wait_for(drain_ws(ws), 30)
    assert ws.close_code == 4429 and "ws_send_timeout_s" in events[-1]["message"]
    assert len(audio) < 12_000 * 600


def test_body_decoding_keeps_to_its_share_of_a_core(
    live_server_factory: Callable[..., LiveServer], make_mel: Callable[..., np.ndarray]
) -> None:
    """After a body that took d seconds to decode, the next waits d x (1 / decode_share - 1):
    with a tiny share, a second large body right behind the first waits past parse_timeout_s."""
    live = live_server_factory(decode_share=0.0005, parse_timeout_s=1.0)
    body = {"mel": make_mel(2000).tolist(), "format": "pcm", "seed": 1}
    with live.client() as c:
        big = c.post("/v1/synthesize", json=body)  # decoding it takes ms: seconds of rest owed
        behind = c.post("/v1/synthesize", json=body)
    assert big.status_code == 200
    assert behind.status_code == 413 and "parse_timeout_s" in behind.json()["error"]["message"]


def test_bodies_decode_in_a_process_of_their_own_which_comes_back(
    live_server_factory: Callable[..., LiveServer], make_mel: Callable[..., np.ndarray]
) -> None:
    """json.loads holds the GIL for a whole document, so bodies decode in the app's decoder
    process; if it dies, one request gets a 503 and the next a new decoder."""
    import os
    import signal

    live = live_server_factory()
    body = {"mel": make_mel(20).tolist(), "format": "pcm"}
    with live.client() as c:
        assert c.post("/v1/synthesize", json=body).status_code == 200
        pids = list(live.app.state.decoder._processes)
        assert pids and os.getpid() not in pids
        os.kill(pids[0], signal.SIGKILL)
        time.sleep(0.5)
        statuses = [c.post("/v1/synthesize", json=body).status_code for _ in range(3)]
    assert statuses[-1] == 200 and set(statuses) <= {200, 503}
    assert list(live.app.state.decoder._processes) != pids
