"""Client input of the websocket stream: its JSON messages and its URL's `?sample_rate=`.

Bad input raises InvalidInput naming the field; server/errors.py maps it to close code 1007.
"""

from __future__ import annotations

import json
from typing import get_args

from fastapi import WebSocket
from pydantic import TypeAdapter, ValidationError

from server.errors import InvalidInput
from server.schemas import OutputRate, WsClose, WsConfig, WsFlush, WsMel, WsMessage, WsText

_MESSAGE = TypeAdapter(WsMessage)


def parse_message(text: str) -> WsConfig | WsText | WsMel | WsFlush | WsClose:
    """One client message -> its model; InvalidInput (close 1007) naming the problem.

    Parsed as the HTTP routes parse a body (the json module, then the model), so both accept the
    same documents: e.g. a lone surrogate escape such as "\\ud800" is JSON, and the text front
    end drops it, on either route.
    """
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidInput(f"message is not valid JSON: {exc}") from exc
    try:
        return _MESSAGE.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"][1:] if not str(p)[:1].isupper()) or "message"
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = "type"
        extra = f" ({len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        raise InvalidInput(f"{loc}: {err['msg']}{extra}", loc) from exc


def query_rate(ws: WebSocket, default: int) -> int:
    """`?sample_rate=` of the URL (so the `start` event can carry it), else `default`."""
    given = ws.query_params.get("sample_rate")
    if given is None:
        return default
    if not given.isdigit() or int(given) not in get_args(OutputRate):
        raise InvalidInput(
            f"sample_rate {given!r} is not one of {list(get_args(OutputRate))}", "sample_rate"
        )
    return int(given)
