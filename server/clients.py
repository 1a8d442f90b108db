"""Per-client limits: how many websockets and streams one client (by address) may hold at once.

Admission (server/workers) keeps the cores in real time; these caps keep one client from taking
every slot or every socket for itself. A client is its remote address: behind a proxy every
request shares the proxy's address, so raise the caps there or leave them off (`None`).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import Scope

from server.errors import ClientLimit
from server.workers.pool import StreamHandle, WorkerPool


def client_of(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class ClientLimits:
    def __init__(self, max_sockets: int | None, max_streams: int | None) -> None:
        self.max_sockets = max_sockets
        self.max_streams = max_streams
        self.sockets: collections.Counter[str] = collections.Counter()
        self.streams: collections.Counter[str] = collections.Counter()

    @contextmanager
    def socket(self, client: str) -> Iterator[None]:
        """Hold one of `client`'s websocket places for the block; ClientLimit when none is left."""
        if self.max_sockets is not None and self.sockets[client] >= self.max_sockets:
            raise ClientLimit(
                f"this client already has {self.sockets[client]} websockets open, the most "
                f"allowed (max_sockets_per_client); close one first"
            )
        self.sockets[client] += 1
        try:
            yield
        finally:
            self.sockets[client] -= 1
            if not self.sockets[client]:
                del self.sockets[client]

    def open_stream(self, pool: WorkerPool, client: str, seed: int = 0) -> StreamHandle:
        """pool.open_stream, counted against `client` until the stream is closed."""
        if self.max_streams is not None and self.streams[client] >= self.max_streams:
            raise ClientLimit(
                f"this client already has {self.streams[client]} streams in flight, the most "
                "allowed (max_streams_per_client); retry when one ends"
            )
        handle = pool.open_stream(seed=seed)
        self.streams[client] += 1

        def release() -> None:
            self.streams[client] -= 1
            if not self.streams[client]:
                del self.streams[client]

        handle.on_close.append(release)
        return handle
