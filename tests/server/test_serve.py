"""`sparrow serve` as a real subprocess: settings errors, flags over env, SIGTERM draining."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from serverkit import drain_ws, free_port, mel_bytes_b64, wait_ready
from websockets.asyncio.client import connect

pytestmark = [pytest.mark.anyio, pytest.mark.live]
SERVE = [sys.executable, "-m", "server", "serve"]


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_invalid_settings_exit_2_with_a_clear_message(tiny_model_dir: Path) -> None:
    r = run_serve("--model", str(tiny_model_dir), "--cores", "0,4096")
    assert r.returncode == 2 and "affinity mask" in r.stderr
    r = run_serve("--model", str(tiny_model_dir), "--cores", "4096")  # a count
    assert r.returncode == 2 and "cores are allowed here" in r.stderr
    r = run_serve("--model", str(tiny_model_dir), env={"SPARROW_HEADROOM": "7"})
    assert r.returncode == 2 and "headroom" in r.stderr and "SPARROW_" in r.stderr
    r = run_serve("--model", "/nonexistent/model")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_workers_that_never_start_exit_non_zero_with_the_cause(tiny_model_dir: Path) -> None:
    r = run_serve("--model", str(tiny_model_dir), "--port", "0", "--start-timeout-s", "0.001")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no worker became ready" in r.stderr and "start_timeout_s" in r.stderr


@pytest.fixture
def served(tiny_model_dir: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[str], str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
        port = free_port()
        proc = subprocess.Popen(
            [
                *SERVE,
                "--model",
                str(tiny_model_dir),
                "--port",
                str(port),
                "--log-level",
                "warning",
                *args,
            ],
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with httpx.Client(base_url=url) as c:
                    wait_ready(c.get, 60)
                return proc, url
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"server did not start: {proc.communicate()[0]}") from None
                time.sleep(0.1)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_sigterm_drains_open_streams_then_exits(
    served: Callable[..., tuple[subprocess.Popen[str], str]], make_mel: Callable[..., np.ndarray]
) -> None:
    # flags win over the environment: SPARROW_MAX_STREAMS=5 loses to --max-streams 2, and
    # SPARROW_CORES=1 (a count) still applies
    proc, url = served(
        "--drain-timeout-s",
        "30",
        "--max-streams",
        "2",
        env={"SPARROW_MAX_STREAMS": "5", "SPARROW_CORES": "1"},
    )
    long_mel = make_mel(6000)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        workers = (await client.get("/readyz")).json()["workers"]
        assert len(workers) == 1 and workers[0]["capacity"] == 2
        http = asyncio.ensure_future(
            client.post("/v1/synthesize", json={"mel": mel_bytes_b64(long_mel), "format": "pcm"})
        )
        ws = await connect(url.replace("http", "ws") + "/v1/stream")
        assert json.loads(await ws.recv())["type"] == "start"
        await ws.send(json.dumps({"type": "mel", "mel": make_mel(24).tolist()}))
        deadline = time.monotonic() + 30
        while (await client.get("/readyz")).json()["streams_in_flight"] < 2:
            assert time.monotonic() < deadline, "streams were not admitted"
            await asyncio.sleep(0.02)

        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["draining"] is True
        refused = await client.post("/v1/synthesize", json={"mel": make_mel(4).tolist()})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "not_ready"

        # the websocket stream is wrapped up: its buffered mel vocoded, `end`, close 1001
        events, audio = await drain_ws(ws)
        assert ws.close_code == 1001 and events[-1]["type"] == "end" and len(audio) == 24 * 600
        # the in-flight HTTP request completes in full
        r = await asyncio.wait_for(http, 60)
        assert r.status_code == 200 and len(r.content) == 6000 * 600
    assert proc.wait(30) == 0
