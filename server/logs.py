"""Log lines: each names its request (`x-request-id`), and none carries an API key.

`log_config()` is uvicorn's own logging configuration plus two filters on every handler:
`RequestIdFilter` (adds `request_id`, "-" outside a request) and `RedactSecrets` (an `api_key=`
in a logged URL, as browsers' websockets send it, becomes `api_key=***`). Server modules log
through the root logger, which `sparrow serve` gives the same filters.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from uvicorn.config import LOGGING_CONFIG

from server.request_id import current

_KEY_IN_URL = re.compile(r"(api_key=)[^&\s\"']*", re.IGNORECASE)
_BEARER = re.compile(r"(bearer\s+)[^\s\"']+", re.IGNORECASE)
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def redact(text: str) -> str:
    return _BEARER.sub(r"\1***", _KEY_IN_URL.sub(r"\1***", text))


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record ("-" outside a request) for `%(request_id)s` formats."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current.get()
        return True


class RedactSecrets(logging.Filter):
    """Rewrites a record's message so no API key reaches a log (uvicorn's access log prints the
    whole URL, query string included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            # uvicorn's access formatter reads the URL from the arguments, so redact them there
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's LOGGING_CONFIG with the request id in each line and secrets redacted."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {
        "request_id": {"()": "server.logs.RequestIdFilter"},
        "redact": {"()": "server.logs.RedactSecrets"},
    }
    for handler in config["handlers"].values():
        handler["filters"] = ["request_id", "redact"]
    access = config["formatters"]["access"]
    access["fmt"] = (
        '%(levelprefix)s [%(request_id)s] %(client_addr)s - "%(request_line)s" %(status_code)s'
    )
    return config


def install_root_filters() -> None:
    """The same filters and format on the root logger's handlers (the server's own modules)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
        handler.addFilter(RedactSecrets())
        handler.setFormatter(logging.Formatter(FORMAT))
