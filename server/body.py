"""JSON request bodies decoded and validated off the event loop, one at a time, within a budget.

FastAPI decodes and validates a body on the event loop: an 8 MiB mel list costs a second of CPU
there, during which /healthz, every websocket and every stream's audio wait. Even in a thread it
would stall them: `json.loads` holds the GIL for the whole document (~90 ms for 7 MiB). So the body
is read (server.limits bounds its size and read time), then `json.loads` + the pydantic model run
in a decoder process of the app's own (at nice 10, below the event loop and the vocoder workers),
which sends back the model with a mel list packed as base64 float32 (a memcpy to unpickle).
Decoding takes at most `decode_share` of a core: after a body that took d seconds the next waits
d x (1 / decode_share - 1). Small bodies never notice (milliseconds); a flood of large ones
queues instead of taking the core from the streams, and a body still waiting after
`parse_timeout_s` is refused (413).

Errors come out as FastAPI's own (RequestValidationError), so server/errors.py words them as for
any other route; the same documents are accepted (the json module, then the model, as the
websocket parses its messages).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from server.errors import InputTooLarge, NotReady

logger = logging.getLogger(__name__)

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


def _decoder_started() -> None:
    os.nice(10)  # the decoder yields the core to the event loop and the vocoder workers


def decode_packed(model_path: str, raw: bytes, declared_json: bool) -> tuple[str, Any]:
    """In the decoder process: ("ok", the model, packed by its compact() if it has one) or
    ("invalid", FastAPI-style errors without their inputs, which can be the whole body)."""
    module, _, name = model_path.partition(":")
    model = getattr(importlib.import_module(module), name)
    try:
        value = decode(model, raw, declared_json)
    except RequestValidationError as exc:
        return "invalid", [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
    compact = getattr(value, "compact", None)
    return "ok", compact() if callable(compact) else value


def decoder_for(app: Any) -> ProcessPoolExecutor:
    """The app's decoder process (spawned: the server's threads make fork unsafe)."""
    if getattr(app.state, "decoder", None) is None:
        app.state.decoder = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_decoder_started,
        )
    executor: ProcessPoolExecutor = app.state.decoder
    return executor


def start_decoder(app: Any) -> None:
    """Start the decoder process now (the app's start-up), so no request waits for its spawn."""
    decoder_for(app).submit(decode_packed, "server.body:_Probe", b"{}", True)


def stop_decoder(app: Any) -> None:
    executor = getattr(app.state, "decoder", None)
    app.state.decoder = None
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)


class _Probe(BaseModel):
    """The smallest body: what start_decoder decodes to start the process."""


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
            path = f"{model.__module__}:{model.__qualname__}"
            try:
                work = loop.run_in_executor(
                    decoder_for(request.app), decode_packed, path, raw, declared_json
                )
            except BrokenProcessPool:
                slots.release()
                raise
            # The slot is held until the decoder is done, even if the request stops waiting,
            # and then for the rest that keeps decoding within decode_share of a core.
            work.add_done_callback(
                lambda _: loop.call_later((time.perf_counter() - t0) * rest, slots.release)
            )
            work.add_done_callback(
                lambda _: request.app.state.metrics.body_decode.labels(
                    route=request.url.path
                ).observe(time.perf_counter() - t0)
            )
            kind, value = await asyncio.shield(work)
    except BrokenProcessPool:
        stop_decoder(request.app)
        logger.error("the body decoder process died; starting a new one")
        raise NotReady("the request decoder restarted; retry") from None
    except TimeoutError:
        raise InputTooLarge(
            f"request body took more than {budget:g} s to decode (parse_timeout_s); "
            "send a smaller body, or a mel as base64 float32",
            "body",
        ) from None
    if kind == "invalid":
        raise RequestValidationError(value)
    result: M = value
    return result


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
