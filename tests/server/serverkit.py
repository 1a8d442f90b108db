"""Helpers for the server tests: real uvicorn in a thread, readiness polling, small parsers."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn
from fastapi import FastAPI

from server.app import create_app
from server.config import Settings
from server.serve import uvicorn_config


def tiny_settings(model_dir: Path, **overrides: Any) -> Settings:
    return Settings(model=model_dir, **overrides)


def wait_ready(get: Callable[[str], Any], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = get("/readyz")
        if last.status_code == 200:
            return
        body = last.json()
        if body.get("error"):
            raise RuntimeError(body["error"])
        time.sleep(0.05)
    raise TimeoutError(f"server not ready after {timeout} s: {last.text if last else None}")


@dataclass
class LiveServer:
    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)

    def wait_ready(self, timeout: float = 60.0) -> None:
        with self.client() as c:
            wait_ready(c.get, timeout)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def start_live_server(settings: Settings, wait: bool = True) -> LiveServer:
    app = create_app(settings)
    config = uvicorn_config(app, settings, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="uvicorn-test")
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    live = LiveServer(app, server, thread, port)
    if wait:
        live.wait_ready()
    return live


def mel_bytes_b64(mel: np.ndarray) -> dict[str, Any]:
    return {
        "data": base64.b64encode(mel.astype("<f4").tobytes()).decode(),
        "shape": list(mel.shape),
    }


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples called `name` whose labels include `labels`, from exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(
                sample.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                total += sample.value
    return total


async def ws_session(
    url: str, messages: list[Any], *, read: bool = True, **connect_kw: Any
) -> tuple[list[Any], bytes, int | None, str]:
    """Run one websocket session with the `websockets` client: send `messages` (dicts as JSON,
    bytes raw), then read everything until the server closes. Returns (JSON events, audio,
    close code, close reason)."""
    import json

    from websockets.asyncio.client import connect

    async with connect(url, max_size=None, **connect_kw) as ws:
        for m in messages:
            await ws.send(m if isinstance(m, (bytes, str)) else json.dumps(m))
        events, audio = await drain_ws(ws)
        return events, audio, ws.close_code, ws.close_reason or ""


async def drain_ws(ws: Any) -> tuple[list[Any], bytes]:
    """Read a websocket until it closes: (JSON events, concatenated binary audio). A close with
    an error code ends the read quietly; the caller checks ws.close_code."""
    import json

    from websockets.exceptions import ConnectionClosed

    events: list[Any] = []
    audio = b""
    try:
        async for msg in ws:
            if isinstance(msg, bytes):
                audio += msg
            else:
                events.append(json.loads(msg))
    except ConnectionClosed:
        pass
    return events, audio


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
