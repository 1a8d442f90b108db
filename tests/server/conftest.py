"""Server fixtures: apps on the tiny real model, via TestClient and via a real uvicorn.

`live_server_factory(**settings)` starts uvicorn.Server in a thread on 127.0.0.1 with an ephemeral
port and waits for /readyz; the workers are real pinned processes. Servers are shared per session
where their settings allow it, since each costs a (fast) worker start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from serverkit import LiveServer, start_live_server, tiny_settings, wait_ready

from server.app import create_app


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def live_server_factory(tiny_model_dir: Path) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def make(wait: bool = True, **overrides: Any) -> LiveServer:
        live = start_live_server(tiny_settings(tiny_model_dir, **overrides), wait=wait)
        started.append(live)
        return live

    yield make
    for live in started:
        live.stop()


@pytest.fixture
def server_with(tiny_model_dir: Path) -> Iterator[Callable[..., LiveServer]]:
    """Servers with their own settings, stopped when the test ends (a test that kills workers
    or fills capacity must not leave its server to the next one)."""
    started: list[LiveServer] = []

    def make(**overrides: Any) -> LiveServer:
        live = start_live_server(tiny_settings(tiny_model_dir, **overrides))
        started.append(live)
        return live

    yield make
    for live in started:
        live.stop()


@pytest.fixture(scope="session")
def live(live_server_factory: Callable[..., LiveServer]) -> LiveServer:
    """The default server: every allowed core, measured capacity, tiny model."""
    return live_server_factory()


@pytest.fixture(scope="session")
def app_client(tiny_model_dir: Path) -> Iterator[TestClient]:
    """TestClient on an app with the default settings (lifespan runs: real workers)."""
    app = create_app(tiny_settings(tiny_model_dir, idle_timeout_s=5.0))
    with TestClient(app) as client:
        wait_ready(client.get)
        yield client
