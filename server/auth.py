"""The API key: what a client presented, whether it is right, and a gate in front of the app.

`ApiKeyMiddleware` (pure ASGI) refuses a request with a missing or wrong key before the app runs,
so nothing of an unauthenticated body is read, decoded or validated: a client without the key
cannot make the server parse megabytes of JSON. Websockets are checked by their route after
`accept`, so the refusal can carry a close code and reason (1008).
"""

from __future__ import annotations

import secrets

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from server.config import Settings
from server.errors import Unauthorized
from server.limits import refuse_unread

PUBLIC_PATHS = frozenset(
    {"/", "/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json"}
)
PUBLIC_PREFIXES = ("/static/", "/docs/")
"""Liveness, readiness and metrics (probes and Prometheus carry no key), the demo page (it asks
for the key) and the OpenAPI pages (the schema, no audio)."""


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


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.settings.api_key is not None
            and not is_public(scope["path"])
        ):
            try:
                check_api_key(HTTPConnection(scope), self.settings)
            except Unauthorized as exc:
                await refuse_unread(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)
