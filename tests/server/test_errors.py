"""Every error maps to one status, OpenAI error shape and websocket close code."""

from __future__ import annotations

import pytest

from models.dsp.features import MelInputError
from models.frontend.festival_frontend import (
    FrontendBusy,
    FrontendError,
    FrontendUnavailable,
    InvalidSpeed,
    UnknownVoice,
)
from server.errors import (
    ClientTooSlow,
    IdleTimeout,
    InputTooLarge,
    NoCapacity,
    NotReady,
    Unauthorized,
    UnsupportedData,
    WorkerDied,
    error_body,
    map_error,
)


@pytest.mark.parametrize(
    ("exc", "status", "ws_close"),
    [
        (NoCapacity("full"), 429, 1013),
        (NotReady("starting"), 503, 1013),
        (WorkerDied("died"), 503, 1011),
        (Unauthorized("no key"), 401, 1008),
        (InputTooLarge("big"), 413, 1009),
        (ClientTooSlow("slow"), 429, 4429),
        (IdleTimeout("idle"), 400, 4408),
        (UnsupportedData("binary"), 400, 1003),
        (MelInputError("bad mel"), 422, 1007),
        (UnknownVoice("who"), 400, 1007),
        (InvalidSpeed("fast"), 400, 1007),
        (FrontendUnavailable("apt-get install festival"), 503, 1011),
        (FrontendError("festival crashed"), 500, 1011),
        (FrontendBusy("all 2 Festival processes stayed busy"), 503, 1013),
        (ValueError("odd"), 400, 1007),  # never a 500 for a ValueError
        (RuntimeError("bug"), 500, 1011),
    ],
)
def test_mapping(exc: Exception, status: int, ws_close: int) -> None:
    m = map_error(exc)
    assert (m.status, m.ws_close) == (status, ws_close)
    body = error_body(m)["error"]
    assert set(body) == {"message", "type", "param", "code"}
    if status != 500 or not isinstance(exc, RuntimeError):
        assert str(exc) in body["message"]


def test_internal_errors_do_not_leak_details() -> None:
    assert map_error(RuntimeError("secret path /x")).message == "internal server error"


def test_retry_after_on_capacity() -> None:
    assert map_error(NoCapacity("full")).retry_after_s == 1
    assert map_error(FrontendBusy("busy")).retry_after_s == 1
