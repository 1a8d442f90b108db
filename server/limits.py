"""Limits on what one HTTP client can hold: body size, body read time, header read time; and
paths normalised without a redirect. Pure ASGI, answering in the API's JSON error shape.

- Body size: a declared Content-Length over the limit is refused before the body is read; a
  chunked body is counted as it arrives and refused as soon as it passes the limit (memory stays
  bounded).
- Body time: the whole body must arrive within `body_timeout_s` (408), so a client dripping a
  byte a second cannot hold a request, its socket and its file descriptor for ever.
- Header time: uvicorn waits for a request's headers without a deadline; `HeaderTimeoutProtocol`
  closes a connection whose request line and headers take longer than `header_timeout_s`
  (nothing can be answered: there is no request yet).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.errors import InputTooLarge, error_response


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    def _message(self, size: int | None) -> str:
        got = f" ({size} bytes)" if size is not None else ""
        return f"request body is larger than the {self.max_bytes}-byte limit{got}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await refuse_unread(InputTooLarge(self._message(int(declared)), "body"))(
                scope, receive, send
            )
            return
        total = 0
        deadline: float | None = None
        body_done = False

        async def limited_receive() -> Message:
            nonlocal total, deadline, body_done
            if body_done or self.timeout_s is None:
                message = await receive()  # after the body: waiting for a disconnect is fine
            else:
                loop = asyncio.get_running_loop()
                deadline = deadline or loop.time() + self.timeout_s
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    # FastAPI re-raises HTTPExceptions from body reading; errors.py shapes it.
                    raise HTTPException(
                        408,
                        f"request body not received within {self.timeout_s:g} s (body_timeout_s)",
                    ) from None
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_bytes:
                    raise HTTPException(413, self._message(None))
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)


def refuse_unread(exc: BaseException) -> Response:
    """An error answered before the request's body was read, closing the connection after it:
    otherwise the server keeps reading (and throwing away) the rest of a body it refused, on its
    event loop, for as long as the client cares to send it."""
    response = error_response(exc)
    response.headers["connection"] = "close"
    return response


class TrailingSlashMiddleware:
    """`/v1/models/` is served as `/v1/models`, in place: a redirect would build its Location
    from the client's Host header, and clients and proxies handle redirected POSTs badly."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        trailing = len(path) > 1 and path.endswith("/") and not path.startswith("/static/")
        if trailing and scope["type"] in ("http", "websocket"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
        await self.app(scope, receive, send)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's line and headers (the
    `header_timeout_s` setting, read from the uvicorn config's `header_timeout_s` attribute)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        timeout = getattr(self.config, "header_timeout_s", None)
        if timeout:
            self._header_timer = self.loop.call_later(timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        self.logger.info("closing a connection whose request headers took too long")
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a whole request is closed too

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
