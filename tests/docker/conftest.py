"""A real `sparrow serve` process (the image's entrypoint) on the tiny model, for the live checks
of the Docker/Prometheus/Grafana configuration."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _console_script() -> str:
    """The installed `sparrow` script, the same one the image's ENTRYPOINT runs."""
    path = shutil.which(
        "sparrow",
        path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    if path is None:
        pytest.fail("the `sparrow` console script is not installed: pip install -e .")
    return path


@pytest.fixture(scope="session")
def served(tiny_index_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of `sparrow serve` started like the Dockerfile does (settings from SPARROW_*)."""
    port = _free_port()
    env = dict(os.environ)
    env.update(
        SPARROW_HOST="127.0.0.1",
        SPARROW_PORT=str(port),
        SPARROW_MODEL=str(tiny_index_dir),
        SPARROW_CORES="1",
    )
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [_console_script(), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sparrow serve exited {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"sparrow serve not ready in 90 s:\n{log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)  # the drain path, as `docker stop` would
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
