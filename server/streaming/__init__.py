"""The websocket stream behind /v1/stream (server/routes/stream.py).

messages.py parses what the client sends, session.py runs one connection (its tasks, the worker's
stream slot, sending), text.py turns the connection's running text into mel segments.
"""

from server.streaming.messages import parse_message, query_rate
from server.streaming.session import Session

__all__ = ["Session", "parse_message", "query_rate"]
