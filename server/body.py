"""JSON request bodies decoded and validated off the event loop, a few at a time, within a budget.

FastAPI decodes and validates a body on the event loop: an 8 MiB mel list costs seconds of CPU
there, during which /healthz, every websocket and every stream's audio wait. Here the body is read
(server.limits bounds its size and read time), then `json.loads` + the pydantic model run in a
worker thread, one body at a time, and decoding takes at most `decode_share` of a core: after a
body that took d seconds the next waits d x (1 / decode_share - 1). Small bodies never notice
(microseconds); a flood of large ones queues instead of taking the core from the streams and the
event loop, and a body still waiting after `parse_timeout_s` is refused (413).

Errors come out as FastAPI's own (RequestValidationError), so server/errors.py words them as for
any other route; the same documents are accepted (the json module, then the model, as the
websocket parses its messages).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from server.errors import InputTooLarge

M = TypeVar("M", bound=BaseModel)
PARSE_SLOTS = 1
"""Bodies decoded at once: the cores run the vocoder; decoding is a short, bounded side job."""


def decode(model: type[M], raw: bytes, declared_json: bool = True) -> M:
    """bytes -> model; RequestValidationError naming the field (or `body` for bad JSON).
    `declared_json`: the client said (or did not say otherwise) that the body is JSON."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        if not declared_json:  # a form or text body: say what the route takes
            raise RequestValidationError(
                [{"type": "model_attributes_type", "loc": ("body",), "msg": "", "input": {}}]
            ) from None
        where = getattr(exc, "pos", 0)
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", where),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": getattr(exc, "msg", None) or str(exc)[:200]},
                }
            ]
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None
    except RecursionError:  # nesting deeper than the validator's stack
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": "nested too deeply", "input": {}}]
        ) from None


def slots_for(request: Request) -> asyncio.Semaphore:
    """The app's parse slots (one set per app, created on first use in its event loop)."""
    state = request.app.state
    if getattr(state, "parse_slots", None) is None:
        state.parse_slots = asyncio.Semaphore(PARSE_SLOTS)
    slots: asyncio.Semaphore = state.parse_slots
    return slots


async def parse_body(request: Request, model: type[M]) -> M:
    settings = request.app.state.settings
    budget = float(settings.parse_timeout_s)
    rest = 1.0 / float(settings.decode_share) - 1.0  # idle time owed per second of decoding
    raw = await request.body()
    content_type = request.headers.get("content-type", "").lower()
    declared_json = not content_type or "json" in content_type
    slots = slots_for(request)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(budget):
            await slots.acquire()
            t0 = time.perf_counter()
            work = loop.run_in_executor(None, decode, model, raw, declared_json)
            # The slot is held until the thread ends, even if the request stops waiting for it,
            # and then for the rest that keeps decoding within decode_share of a core.
            work.add_done_callback(
                lambda _: loop.call_later((time.perf_counter() - t0) * rest, slots.release)
            )
            work.add_done_callback(
                lambda _: request.app.state.metrics.body_decode.labels(
                    route=request.url.path
                ).observe(time.perf_counter() - t0)
            )
            return await asyncio.shield(work)
    except TimeoutError:
        raise InputTooLarge(
            f"request body took more than {budget:g} s to decode (parse_timeout_s); "
            "send a smaller body, or a mel as base64 float32",
            "body",
        ) from None


def json_body(model: type[M]) -> Any:
    """A dependency giving the request body as `model`, decoded off the event loop."""

    async def dependency(request: Request) -> M:
        return await parse_body(request, model)

    return Depends(dependency)


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting `model` as the JSON body (see server/openapi.py for the
    component it refers to)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }
