"""`sparrow loadtest --attack`: hostile clients beside the real streams, and what they cost.

While the load test's streams run, three kinds of attacker hit the same server on loopback:
- big bodies: clients POSTing ~7.4 MiB JSON mel lists (12,288 frames) to /v1/synthesize in a
  loop; half without the API key (refused before the body is read: 401 and the connection
  closed), half with it (read and decoded off the event loop, then refused for passing
  `max_mel_frames`: 413), so they cost the server parsing but no vocoder time;
- idle sockets: websockets that connect and never send;
- slow senders: TCP connections that drip a request's headers a byte at a time.
A prober times GET /healthz every 50 ms. The report gives /healthz's latency percentiles (the
readiness a Kubernetes probe sees) and what each attacker got; the streams' late frames come
from the load test itself. Every loop is bounded by the `stop` event and by the attack's length.
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

PROBE_INTERVAL_S = 0.05
BIG_BODY_BYTES = int(7.5 * 2**20)


@dataclass(frozen=True)
class AttackPlan:
    url: str
    api_key: str | None
    big_bodies: int = 8
    idle_sockets: int = 16
    slow_senders: int = 16


@dataclass
class AttackReport:
    healthz_ms: list[float] = field(default_factory=list)
    healthz_failures: int = 0
    outcomes: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.healthz_ms) if self.healthz_ms else np.zeros(1)
        return {
            "healthz_probes": len(self.healthz_ms),
            "healthz_failures": self.healthz_failures,
            "healthz_ms": {
                "p50": round(float(np.percentile(lat, 50)), 1),
                "p99": round(float(np.percentile(lat, 99)), 1),
                "max": round(float(lat.max()), 1),
            },
            "attackers": {k: dict(v) for k, v in self.outcomes.items()},
        }


def big_body() -> bytes:
    """A JSON body just under the default 8 MiB limit (so it is read and decoded, not refused
    for its size): a mel list of about 12,000 frames."""
    rng = np.random.default_rng(0)
    mel = np.round(rng.uniform(-9.0, -1.0, (BIG_BODY_BYTES // (80 * 8), 80)), 3)
    body = json.dumps({"mel": mel.tolist()}).encode()
    while len(body) > BIG_BODY_BYTES:
        mel = mel[: int(len(mel) * BIG_BODY_BYTES / len(body)) - 1]
        body = json.dumps({"mel": mel.tolist()}).encode()
    return body


def _probe(url: str, report: AttackReport, stop: threading.Event) -> None:
    """GET /healthz every PROBE_INTERVAL_S from a thread of its own, so the attackers' work in
    this process's event loop does not show up as the server's latency."""
    with httpx.Client(base_url=url, timeout=5.0) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                r = client.get("/healthz")
                if r.status_code == 200:
                    report.healthz_ms.append((time.perf_counter() - t0) * 1000)
                else:
                    report.healthz_failures += 1
            except httpx.HTTPError:
                report.healthz_failures += 1
            stop.wait(PROBE_INTERVAL_S)


async def _poster(
    client: httpx.AsyncClient,
    body: bytes,
    key: str | None,
    tally: collections.Counter[str],
    stop: asyncio.Event,
) -> None:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    while not stop.is_set():
        try:
            r = await client.post("/v1/synthesize", content=body, headers=headers, timeout=60)
            tally[str(r.status_code)] += 1
        except httpx.HTTPError as exc:
            tally[type(exc).__name__] += 1


async def _idle_socket(
    ws_url: str, key: str | None, tally: collections.Counter[str], stop: asyncio.Event
) -> None:
    """A websocket with the key (if any) that connects and never asks for audio."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    headers = {"authorization": f"Bearer {key}"} if key else None
    while not stop.is_set():
        try:
            async with connect(ws_url, open_timeout=10, additional_headers=headers) as ws:
                tally["connected"] += 1
                try:
                    async for _ in ws:  # `start`, then nothing until the server closes it
                        pass
                    tally[f"closed {ws.close_code}"] += 1
                except ConnectionClosed:
                    tally[f"closed {ws.close_code}"] += 1
        except (OSError, InvalidStatus, TimeoutError) as exc:
            tally[type(exc).__name__] += 1
            await asyncio.sleep(0.2)


async def _slow_sender(
    host: str, port: int, tally: collections.Counter[str], stop: asyncio.Event
) -> None:
    request = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4000 + b"\r\n\r\n"
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            tally[type(exc).__name__] += 1
            await asyncio.sleep(0.2)
            continue
        tally["connected"] += 1
        try:
            for byte in request:
                if stop.is_set() or reader.at_eof():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.5)
            tally["closed by server" if reader.at_eof() else "stopped"] += 1
        except (ConnectionError, OSError):
            tally["closed by server"] += 1
        finally:
            writer.close()


async def run_attacks(plan: AttackPlan, stop: asyncio.Event) -> AttackReport:
    """Run every attacker and the prober until `stop` is set; then the report."""
    report = AttackReport()
    parts = urlsplit(plan.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    ws_url = f"ws://{host}:{port}/v1/stream"
    body = await asyncio.to_thread(big_body)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    probe_stop = threading.Event()
    prober = threading.Thread(target=_probe, args=(plan.url, report, probe_stop), daemon=True)
    prober.start()
    async with httpx.AsyncClient(base_url=plan.url, limits=limits) as client:
        tasks: list[asyncio.Future[None]] = []
        for i in range(plan.big_bodies):
            key = plan.api_key if i % 2 == 0 else None  # half keyed, half not (or none at all)
            name = "big body, keyed" if key else "big body, no key"
            tasks.append(
                asyncio.ensure_future(_poster(client, body, key, report.outcomes[name], stop))
            )
        for _ in range(plan.idle_sockets):
            tasks.append(
                asyncio.ensure_future(
                    _idle_socket(ws_url, plan.api_key, report.outcomes["idle socket"], stop)
                )
            )
        for _ in range(plan.slow_senders):
            tasks.append(
                asyncio.ensure_future(
                    _slow_sender(host, port, report.outcomes["slow sender"], stop)
                )
            )
        await stop.wait()
        probe_stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.to_thread(prober.join, 10)
    return report


def format_report(summary: dict[str, Any]) -> str:
    h = summary["healthz_ms"]
    head = (
        f"/healthz under attack: p50 {h['p50']} ms, p99 {h['p99']} ms, max {h['max']} ms "
        f"({summary['healthz_probes']} probes, {summary['healthz_failures']} failed)"
    )
    lines = [head]
    for name, tally in summary["attackers"].items():
        got = ", ".join(f"{k}: {v}" for k, v in sorted(tally.items()))
        lines.append(f"  {name}: {got}")
    return "\n".join(lines)
