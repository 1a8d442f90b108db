"""Domain errors and the one place that maps every error to an HTTP status or websocket close code.

Core code raises typed errors (ours, the runtime's `MelInputError`, the front end's); routes never
pick status codes themselves. Every error body has OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`, so one client-side handler fits all routes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from models.dsp.features import MelInputError
from models.frontend.festival_frontend import (
    FrontendBusy,
    FrontendError,
    FrontendInputError,
    FrontendUnavailable,
)

logger = logging.getLogger(__name__)


class SparrowError(Exception):
    """Base of the server's own errors; subclasses set how they reach the client."""

    status: int = 400
    type: str = "invalid_request_error"
    code: str | None = None
    ws_close: int = 1007

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidInput(SparrowError):
    """A request field is well-typed but unusable (e.g. speed with mel input)."""

    status = 422
    code = "invalid_value"


class InputTooLarge(SparrowError):
    """Text, mel or body beyond the configured limits."""

    status = 413
    code = "too_large"
    ws_close = 1009


class Unauthorized(SparrowError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"
    ws_close = 1008


class UnknownModel(SparrowError):
    status = 404
    code = "model_not_found"


class NoCapacity(SparrowError):
    """Every worker already runs as many real-time streams as it can: try again later."""

    status = 429
    type = "rate_limit_error"
    code = "no_capacity"
    ws_close = 1013
    retry_after_s = 1


class ClientLimit(SparrowError):
    """One client (by address) already holds as many websockets or streams as it may."""

    status = 429
    type = "rate_limit_error"
    code = "client_limit"
    ws_close = 1013
    retry_after_s = 1


class NotReady(SparrowError):
    """Workers are still loading, restarting, or the server is draining for shutdown."""

    status = 503
    type = "server_error"
    code = "not_ready"
    ws_close = 1013
    retry_after_s = 2


class WorkerDied(SparrowError):
    """The worker computing this stream crashed; the stream cannot be resumed."""

    status = 503
    type = "server_error"
    code = "worker_died"
    ws_close = 1011


class StreamFailed(SparrowError):
    """A worker could not compute this stream (an error inside the vocoder, not the input)."""

    status = 500
    type = "server_error"
    code = "stream_failed"
    ws_close = 1011


class ClientTooSlow(SparrowError):
    """A websocket client stopped reading and its unsent audio passed the send-buffer bound."""

    status = 429
    code = "client_too_slow"
    ws_close = 4429


class IdleTimeout(SparrowError):
    code = "idle_timeout"
    ws_close = 4408


class UnsupportedData(SparrowError):
    """Binary websocket messages: the protocol is JSON text from client to server."""

    code = "unsupported_data"
    ws_close = 1003


@dataclass(frozen=True)
class Mapped:
    status: int
    type: str
    code: str | None
    message: str
    param: str | None = None
    ws_close: int = 1011
    retry_after_s: int | None = None


def map_error(exc: BaseException) -> Mapped:
    """The status code, OpenAI error type/code and websocket close code of any error."""
    if isinstance(exc, SparrowError):
        return Mapped(
            exc.status,
            exc.type,
            exc.code,
            exc.message,
            exc.param,
            exc.ws_close,
            getattr(exc, "retry_after_s", None),
        )
    if isinstance(exc, MelInputError):
        return Mapped(422, "invalid_request_error", "invalid_mel", str(exc), exc.param, 1007)
    if isinstance(exc, FrontendUnavailable):
        return Mapped(503, "server_error", "text_frontend_unavailable", str(exc), None, 1011)
    if isinstance(exc, FrontendInputError):  # unknown voice, speed out of range, nothing to speak
        name = type(exc).__name__
        param = exc.param or {"UnknownVoice": "voice", "InvalidSpeed": "speed"}.get(name, "text")
        return Mapped(400, "invalid_request_error", _snake(name), str(exc), param, 1007)
    if isinstance(exc, FrontendBusy):  # every Festival process stayed busy: as full as no capacity
        return Mapped(503, "server_error", "text_frontend_busy", str(exc), None, 1013, 1)
    if isinstance(exc, FrontendError):
        return Mapped(
            500, "server_error", "text_frontend_failed", f"text front end failed: {exc}", None, 1011
        )
    if isinstance(exc, ClientDisconnect):  # left while sending its body: nobody to answer
        return Mapped(499, "invalid_request_error", "client_disconnected", str(exc), None, 1000)
    if isinstance(exc, ValueError):
        # A ValueError from core code is a bad input we did not anticipate: never a 500.
        return Mapped(400, "invalid_request_error", "invalid_value", str(exc), None, 1007)
    return Mapped(500, "server_error", "internal_error", "internal server error", None, 1011)


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def error_body(m: Mapped) -> dict[str, Any]:
    return {"error": {"message": m.message, "type": m.type, "param": m.param, "code": m.code}}


def error_response(exc: BaseException) -> JSONResponse:
    m = map_error(exc)
    if m.status >= 500 and m.code == "internal_error":
        logger.error("unhandled error: %r", exc, exc_info=exc)
    headers = {"Retry-After": str(m.retry_after_s)} if m.retry_after_s else None
    if m.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(error_body(m), status_code=m.status, headers=headers)


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "none", "dict", "list"})


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    parts: list[str] = []
    first_param: str | None = None
    for err in exc.errors():
        kind = err.get("type")
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        # Drop pydantic's union-branch tags ("list[list[float]]", "MelData", "str") from the path.
        loc = [p for p in loc if not ("[" in p or p[:1].isupper() or p in _UNION_TAGS)]
        field = ".".join(loc) or "body"
        msg = err.get("msg", "invalid")
        if kind == "json_invalid":
            field = "body"
            msg = (
                f"request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})"
            )
        elif field == "body" and kind in ("dict_type", "model_attributes_type", "model_type"):
            msg = "request body must be a JSON object (send Content-Type: application/json)"
        first_param = first_param or field
        parts.append(f"{field}: {msg}")
    return "; ".join(parts[:5]) or "invalid request", first_param


HTTP_CODES: dict[int, tuple[str, str | None]] = {
    404: ("not_found", None),
    405: ("method_not_allowed", None),
    413: ("too_large", "body"),  # server/limits.py, for a body without a Content-Length
}
"""Error code and field of the HTTPExceptions Starlette and FastAPI raise themselves."""


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through `map_error`, so each has one status and one body shape."""

    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        m = Mapped(422, "invalid_request_error", "invalid_request", message, param)
        return JSONResponse(error_body(m), status_code=422)

    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status, message = exc.status_code, str(exc.detail)
        code, param = HTTP_CODES.get(status, (None, None))
        if status == 400 and message == "There was an error parsing the body":
            # FastAPI's answer to a body it cannot decode at all (nested too deep, compressed,
            # not UTF-8): a bad body like any other non-JSON one
            status, code, param = 422, "invalid_request", "body"
            message = "request body could not be parsed as JSON (nested too deep, compressed?)"
        m = Mapped(status, "invalid_request_error", code, message, param)
        return JSONResponse(error_body(m), status_code=status, headers=exc.headers)

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    app.add_exception_handler(RequestValidationError, on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, on_http)  # type: ignore[arg-type]
    app.add_exception_handler(SparrowError, on_error)
    app.add_exception_handler(MelInputError, on_error)
    for cls in (FrontendUnavailable, FrontendError, FrontendInputError):
        app.add_exception_handler(cls, on_error)
    app.add_exception_handler(ValueError, on_error)
    app.add_exception_handler(Exception, on_error)
