"""The OpenAPI document as the server really answers: every status a route returns, with the one
error body every route uses (OpenAI's `{"error": {...}}`, server/errors.py), and the JSON bodies
the routes decode off the event loop (server/body.py) as their request schemas.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    message: str = Field(description="what is wrong, naming the field and the limit")
    type: str = Field(description="invalid_request_error, authentication_error, server_error, ...")
    param: str | None = Field(description="the request field at fault, if one is")
    code: str | None = Field(description="machine-readable reason, e.g. invalid_mel, no_capacity")


class ErrorResponse(BaseModel):
    """Every error body, on every route."""

    error: ErrorDetail


_AUTH = {401: "API key missing or wrong (only when the server has one)"}
_SPEECH = {
    **_AUTH,
    400: "unknown voice, unsupported format, nothing speakable in the text",
    404: "unknown model",
    408: "the request body was not received within body_timeout_s",
    413: "body, text, mel or its spoken length over a limit; body too slow to decode",
    422: "a field of the wrong type or out of range (the message names it)",
    429: "every worker is at capacity (Retry-After)",
    500: "the vocoder or the text front end failed on this request",
    503: "not ready, draining, a worker died, or the text front end is busy or not installed",
}
STATUSES: dict[tuple[str, str], dict[int, str]] = {
    ("post", "/v1/synthesize"): {k: v for k, v in _SPEECH.items() if k != 404},
    ("post", "/v1/audio/speech"): _SPEECH,
    ("get", "/v1/models"): _AUTH,
    ("get", "/v1/models/{model_id}"): {**_AUTH, 404: "no model by that name"},
    ("get", "/v1/audio/models"): _AUTH,
    ("get", "/v1/voices"): _AUTH,
    ("get", "/v1/audio/voices"): _AUTH,
}
"""The error statuses of each route (besides 503 for /readyz, whose body is the readiness)."""


def _schemas(models: list[type[BaseModel]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def install_openapi(app: FastAPI, bodies: list[type[BaseModel]]) -> None:
    """Replace the app's OpenAPI generator with one that documents `bodies` and STATUSES."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        components.update(_schemas([*bodies, ErrorResponse]))
        ref = {"$ref": "#/components/schemas/ErrorResponse"}
        for path, operations in doc.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)  # FastAPI's {"detail": [...]}, which no route sends
                for status, description in STATUSES.get((method, path), {}).items():
                    responses[str(status)] = {
                        "description": description,
                        "content": {"application/json": {"schema": ref}},
                    }
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
