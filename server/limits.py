"""Request body size limit as pure ASGI middleware, answering in the API's JSON error shape.

A declared Content-Length over the limit is refused before the body is read; a chunked body is
counted as it arrives and refused as soon as it passes the limit (memory stays bounded).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import InputTooLarge, error_response


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self, size: int | None) -> str:
        got = f" ({size} bytes)" if size is not None else ""
        return f"request body is larger than the {self.max_bytes}-byte limit{got}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(InputTooLarge(self._message(int(declared)), "body"))(
                scope, receive, send
            )
            return
        total = 0

        async def limited_receive() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_bytes:
                    # FastAPI re-raises HTTPExceptions from body reading; errors.py shapes it.
                    raise HTTPException(413, self._message(None))
            return message

        await self.app(scope, limited_receive, send)
