"""`x-request-id` on every response and in every log line written while the request runs.

A client's own id is echoed when it is a sane token (clients and proxies correlate their logs by
it); otherwise, or when none is sent, the server makes one. Pure ASGI, so streamed responses pass
through untouched; the id also reaches websocket sessions (`scope["state"]["request_id"]`).
"""

from __future__ import annotations

import contextvars
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
_SANE = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
"""What is echoed: a token that cannot split a log line or inject a header."""

current: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def request_id_for(scope: Scope) -> str:
    """The client's x-request-id if it is a sane token, else a new one."""
    for name, value in scope.get("headers") or ():
        if name == HEADER.encode():
            given = value.decode("latin-1")
            if _SANE.fullmatch(given):
                return given
            break
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = request_id_for(scope)
        scope.setdefault("state", {})["request_id"] = rid
        token = current.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                headers = [(k, v) for k, v in message.get("headers") or () if k != HEADER.encode()]
                headers.append((HEADER.encode(), rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current.reset(token)
