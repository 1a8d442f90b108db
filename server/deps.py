"""Typed dependencies: app state reached through `Annotated` aliases, and the API-key guard.

Everything lives on `app.state` (set by server/app.py's lifespan); routes ask for it with these
aliases instead of importing globals. `HTTPConnection` makes them work for websockets too.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from models.frontend.festival_frontend import FestivalFrontend
from server.auth import check_api_key, presented_key
from server.clients import ClientLimits
from server.config import Settings
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


def get_clients(conn: HTTPConnection) -> ClientLimits:
    return conn.app.state.clients


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[WorkerPool, Depends(get_pool)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
FrontendDep = Annotated[FestivalFrontend, Depends(get_frontend)]
ClientsDep = Annotated[ClientLimits, Depends(get_clients)]


__all__ = ["ApiKey", "check_api_key", "presented_key"]


def require_api_key(conn: HTTPConnection, settings: SettingsDep) -> None:
    """Router-level dependency for every API route (not /healthz, /readyz, /metrics, static);
    server.auth.ApiKeyMiddleware has already refused HTTP requests without the key, before their
    bodies were read: this keeps the routes' OpenAPI security and covers apps built without it."""
    check_api_key(conn, settings)


ApiKey = Depends(require_api_key)
