"""Typed dependencies: app state reached through `Annotated` aliases, and the API-key guard.

Everything lives on `app.state` (set by server/app.py's lifespan); routes ask for it with these
aliases instead of importing globals. `HTTPConnection` makes them work for websockets too.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from models.frontend.festival_frontend import FestivalFrontend
from server.config import Settings
from server.errors import Unauthorized
from server.metrics import Metrics
from server.workers.pool import WorkerPool


def get_settings(conn: HTTPConnection) -> Settings:
    return conn.app.state.settings


def get_pool(conn: HTTPConnection) -> WorkerPool:
    return conn.app.state.pool


def get_metrics(conn: HTTPConnection) -> Metrics:
    return conn.app.state.metrics


def get_frontend(conn: HTTPConnection) -> FestivalFrontend:
    return conn.app.state.frontend


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[WorkerPool, Depends(get_pool)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
FrontendDep = Annotated[FestivalFrontend, Depends(get_frontend)]


def presented_key(conn: HTTPConnection) -> str | None:
    """The key a client sent: `Authorization: Bearer <key>`, or `?api_key=` (browser websockets
    cannot set headers)."""
    auth = conn.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return conn.query_params.get("api_key") or None


def check_api_key(conn: HTTPConnection, settings: Settings) -> None:
    """Raise Unauthorized unless no key is configured or the client presented the right one."""
    if settings.api_key is None:
        return
    given = presented_key(conn)
    if given is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    if not secrets.compare_digest(given.encode(), settings.api_key.get_secret_value().encode()):
        raise Unauthorized("invalid API key")


def require_api_key(conn: HTTPConnection, settings: SettingsDep) -> None:
    """Router-level dependency for every API route (not /healthz, /readyz, /metrics, static)."""
    check_api_key(conn, settings)


ApiKey = Depends(require_api_key)
