"""FastAPI app factory: `create_app(settings)` wires settings, metrics, the worker pool and routes.

The lifespan starts the pool without waiting for the workers (so /healthz answers at once and
/readyz reports progress) and stops it on shutdown. State lives on `app.state`; routes reach it
through server/deps.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from models.frontend.festival_frontend import FestivalFrontend
from server.auth import ApiKeyMiddleware
from server.body import start_decoder, stop_decoder
from server.clients import ClientLimits
from server.config import Settings, load_settings
from server.errors import install_error_handlers
from server.limits import BodyLimitMiddleware, TrailingSlashMiddleware
from server.metrics import Metrics, RequestMetricsMiddleware, mount_metrics
from server.openapi import install_openapi
from server.request_id import RequestIdMiddleware
from server.routes import health, models, openai, stream, synthesize, voices
from server.schemas import SpeechRequest, SynthesizeRequest
from server.workers.pool import WorkerPool

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
FESTIVAL_NICENESS = 10


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; SettingsError if the model or cores do not fit this machine."""
    settings = settings or load_settings()
    model_dir, cores = settings.check()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = WorkerPool(
            model_dir,
            cores,
            metrics,
            cache_dir=settings.cache_dir,
            headroom=settings.headroom,
            max_streams=settings.max_streams,
            initial_buffer_s=settings.initial_buffer_s,
            adaptive=settings.capacity_recovery_s > 0,
            recovery_s=settings.capacity_recovery_s,
            synthesis=settings.resolved_synthesis(model_dir),
        )
        pool.on_fatal = getattr(app.state, "on_fatal", None)
        app.state.pool = pool
        logger.info("starting %d workers on cores %s for %s", len(cores), cores, model_dir)
        await pool.start()
        start_decoder(app)
        watchdog = asyncio.create_task(_watch_start(pool, settings.start_timeout_s))
        # One Festival process starts beside the workers, so the first text does not wait for it.
        warming = asyncio.create_task(asyncio.to_thread(_warm_frontend, app.state.frontend))
        app.state.wyoming = None
        try:
            if settings.wyoming_port is not None:  # same pool, front end, admission, metrics
                from server.wyoming import WyomingServer

                app.state.wyoming = WyomingServer(
                    app.state,
                    settings.wyoming_host or settings.host,
                    settings.wyoming_port,
                    settings.wyoming_sample_rate,
                )
                await app.state.wyoming.start()
            yield
        finally:
            watchdog.cancel()
            stop_decoder(app)
            if app.state.wyoming is not None:
                await app.state.wyoming.stop()
            await pool.stop()
            await warming
            app.state.frontend.close()

    app = FastAPI(
        redirect_slashes=False,  # a redirect would echo the client's Host header
        title="Sparrow",
        summary="Real-time neural speech synthesis on CPU cores",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.clients = ClientLimits(
        settings.max_sockets_per_client, settings.max_streams_per_client
    )
    app.state.metrics = metrics
    app.state.model_dir = model_dir
    # Festival shares the cores with the pinned vocoder workers: at nice 10 a sentence's burst of
    # CPU yields to them (a tenth of a core's time when both want it), so admitted streams keep
    # real time and only the text's own first audio waits.
    app.state.frontend = FestivalFrontend(
        niceness=FESTIVAL_NICENESS,
        processes=settings.festival_processes,
        on_sentence=metrics.frontend_sentence.observe,
        lexicon=settings.lexicon_entries(),
    )
    metrics.watch_frontend(app.state.frontend.process_counts)
    install_error_handlers(app)
    install_openapi(app, [SynthesizeRequest, SpeechRequest])
    # Innermost first: the body's size and read time are bounded, behind the key check, so a
    # client without the key never gets a body read, let alone decoded.
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s
    )
    app.add_middleware(ApiKeyMiddleware, settings=settings)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)  # sees the 413s too
    app.add_middleware(RequestIdMiddleware)  # every response carries x-request-id
    app.add_middleware(TrailingSlashMiddleware)  # outermost: /v1/models/ is /v1/models
    for module in (health, models, voices, synthesize, openai, stream):
        app.include_router(module.router)
    mount_metrics(app, metrics)
    _mount_static(app)
    return app


async def _watch_start(pool: WorkerPool, timeout_s: float) -> None:
    """A pool with no worker ready after `timeout_s` (e.g. no writable temporary directory, a
    crash loop) is a failed start: /healthz turns 503 and `sparrow serve` exits with the cause,
    rather than a server that says it is healthy while it can never serve."""
    try:
        await asyncio.wait_for(pool.wait_ready(), timeout_s)
    except TimeoutError:
        status = pool.worker_status()
        if any(w["state"] == "ready" for w in status):
            return  # some cores serve; /readyz says which do not
        causes = "; ".join(f"core {w['core']}: {w['error']}" for w in status if w.get("error"))
        pool.fatal_error = f"no worker became ready within {timeout_s:g} s (start_timeout_s)" + (
            f": {causes}" if causes else ""
        )
        logger.error("%s", pool.fatal_error)
        if pool.on_fatal is not None:
            pool.on_fatal(pool.fatal_error)
    except RuntimeError:
        pass  # a fatal load error, already reported by the pool


def _warm_frontend(frontend: FestivalFrontend) -> None:
    try:
        if not frontend.warm_up():
            logger.info("no Festival: text routes answer 503, mel routes work")
    except Exception:  # the text path reports its own errors per request
        logger.warning("could not start a Festival process ahead of time", exc_info=True)


def _mount_static(app: FastAPI) -> None:
    """The browser demo at / and its files under /static (no API key: the page asks for one)."""
    index = STATIC_DIR / "index.html"
    if not index.is_file():
        logger.info("no browser demo at %s", STATIC_DIR)
        return

    @app.get("/", include_in_schema=False)
    def _index() -> FileResponse:
        return FileResponse(index)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
