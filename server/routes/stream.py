"""Websocket /v1/stream: incremental mel (or text) in, PCM frames out as they are made.

Protocol (docs/protocol.md): optional `config` first; `mel` messages are vocoded as they arrive;
`text` messages are fragments of one running text (an LLM's tokens): each sentence is spoken as
soon as its end is known (models/frontend/assembler.py), and a fragment with nothing to say is
punctuation or space of that text, never an error; `flush` speaks the pending text and ends an
utterance (answered by `flushed` once all its audio is sent); `close` flushes, sends `end` and
closes with 1000. With `config.timestamps`, a `words` event precedes each sentence's audio.
Errors: an `error` event, then a close code chosen by server/errors.py.

The connection itself (its tasks, the worker's stream slot, the send limits) is a
server/streaming/session.py Session.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from server.streaming import Session

router = APIRouter(tags=["stream"])
ROUTE = "/v1/stream"


@router.websocket(ROUTE)
async def stream(ws: WebSocket) -> None:
    await Session(ws, ROUTE).run()
