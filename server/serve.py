"""`sparrow serve`: run the HTTP/websocket server with uvicorn.

Settings come from SPARROW_* environment variables; flags override them. SIGTERM drains: the
server stops admitting streams (/readyz turns 503), lets the admitted ones finish for at most
`drain_timeout_s`, then exits. A second SIGTERM, or Ctrl-C, exits at once (open streams fail).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from types import FrameType
from typing import Any

import uvicorn

from server.config import Settings, SettingsError, load_settings
from server.limits import HeaderTimeoutProtocol
from server.logs import install_root_filters, log_config

logger = logging.getLogger(__name__)

FLAGS: list[tuple[str, type, str]] = [
    ("host", str, "interface to bind (default 127.0.0.1; 0.0.0.0 for all)"),
    ("port", int, "TCP port (default 8000; 0 picks a free one)"),
    ("cores", str, "worker cores: 0,1 or 0-3 or [2], or a count N (default: all allowed)"),
    ("model", str, "model dir compiled/<name>, or a compiled/ index (default: its default model)"),
    ("cache-dir", str, "where modules built for this host's ISA are cached"),
    ("max-text-chars", int, "longest text per request/message (default 4096)"),
    ("max-mel-frames", int, "most mel frames per request/utterance (default 12000 = 150 s)"),
    ("max-text-frames", int, "most mel frames from one text (default 48000 = 600 s)"),
    ("max-body-bytes", int, "largest request body (default 8 MiB)"),
    ("max-streams", int, "cap on concurrent streams per worker"),
    ("headroom", float, "fraction of each core's real-time budget to admit (default 0.8)"),
    (
        "capacity-recovery-s",
        float,
        (
            "after late frames lower a core's capacity, add a stream back per this many quiet "
            "seconds (default 30; 0: no adaptation)"
        ),
    ),
    (
        "initial-buffer-s",
        float,
        "playback starts this long after first audio; frames after their time count late (0.1)",
    ),
    ("idle-timeout-s", float, "close idle websockets after this (default 30)"),
    ("drain-timeout-s", float, "on SIGTERM, wait this long for open streams (default 30)"),
    ("start-timeout-s", float, "exit non-zero if no worker is ready this long after start (120)"),
    ("header-timeout-s", float, "close connections whose request headers take longer (10)"),
    ("body-timeout-s", float, "refuse (408) request bodies not received within this (30)"),
    ("parse-timeout-s", float, "refuse (413) JSON bodies that take longer to decode (10)"),
    ("synthesis", str, "synthesis settings over the voice's, JSON: '{\"envelope_passes\": 0}'"),
    ("decode-share", float, "most of a core JSON body decoding may take (default 0.25)"),
    ("max-connections", int, "connections and requests served at once, 503 beyond (1000)"),
    ("ws-send-buffer-bytes", int, "unsent audio allowed per websocket before closing it (4429)"),
    ("api-key", str, "require 'Authorization: Bearer <key>' on API routes"),
    ("log-level", str, "critical|error|warning|info|debug|trace"),
    ("wyoming-port", int, "also serve Wyoming (Home Assistant) on this TCP port, e.g. 10200"),
    ("wyoming-host", str, "interface for Wyoming (default: --host)"),
    ("wyoming-sample-rate", int, "Wyoming audio sample rate (default 24000)"),
    ("lexicon", str, "file of 'word phones' lines: how the front end says those words"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, kind, help_text in FLAGS:
        parser.add_argument(
            f"--{name}",
            type=kind,
            default=None,
            help=help_text + " [env SPARROW_" + name.upper().replace("-", "_") + "]",
        )


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        name.replace("-", "_"): getattr(args, name.replace("-", "_"), None) for name, _, _ in FLAGS
    }
    return load_settings(**overrides)


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM drains the pool before the normal shutdown."""

    def __init__(self, config: uvicorn.Config, app: Any, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.sparrow_app = app
        self.drain_timeout_s = drain_timeout_s
        self.exit_code = 0
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        pool = getattr(self.sparrow_app.state, "pool", None)
        if sig == signal.SIGTERM and not self._draining and pool is not None and self.started:
            self._draining = True
            logger.info("SIGTERM: draining (at most %.0f s) before exit", self.drain_timeout_s)
            asyncio.get_event_loop().create_task(self._drain(pool))
            return
        super().handle_exit(sig, frame)

    async def _drain(self, pool: Any) -> None:
        await pool.drain(self.drain_timeout_s)
        self.should_exit = True

    def fatal(self, message: str) -> None:
        """A worker cannot load the model: exit non-zero instead of serving 503 forever."""
        self.exit_code = 1
        self.should_exit = True


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration `sparrow serve` runs with (the integration tests use it too)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        # Open streams finish during the drain; this only bounds what is left after it.
        "timeout_graceful_shutdown": 2,
        "ws_max_size": max(settings.max_body_bytes, 1 << 20),
        # PCM barely compresses; deflating every audio message only costs CPU on both ends.
        "ws_per_message_deflate": False,
        "lifespan": "on",
        "log_config": log_config(),
        "http": HeaderTimeoutProtocol,
        "limit_concurrency": settings.max_connections,
    }
    options.update(overrides)
    config = uvicorn.Config(app, **options)
    config.header_timeout_s = settings.header_timeout_s  # type: ignore[attr-defined]
    return config


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        settings.check()  # model and cores, before the heavier imports below
        from server.app import create_app  # imported here: `sparrow --help` stays fast

        app = create_app(settings)
    except SettingsError as exc:
        print(f"sparrow serve: {exc}", file=sys.stderr)
        return 2
    install_root_filters()
    config = uvicorn_config(app, settings)
    server = DrainingServer(config, app, settings.drain_timeout_s)
    app.state.on_fatal = server.fatal
    server.run()
    if server.exit_code:
        print(
            "sparrow serve: a worker could not load the model (see the log above)", file=sys.stderr
        )
    return server.exit_code
