"""Every Prometheus metric of the server, its registry, the /metrics route and the request counter.

Multi-process story: workers never touch prometheus_client. They send their timings to the parent
over their pipe (server/workers/pool.py) and the parent records them here, so one ordinary
registry in one process is correct and nothing needs prometheus' multiprocess mode.
Names, types and labels are the contract in docs/protocol.md (dashboards and alerts query them).
All values are in base units (seconds, samples); all distributions are histograms.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# `*_created` series double the exposition and no dashboard uses them.
disable_created_metrics()

# Per-sample compute time: 1..100 µs, fine steps around the 40 µs real-time line of 24 kHz audio.
# Written as literals so the `le` labels read 4e-05, not 3.9999999999999996e-05.
SAMPLE_BUCKETS = (
    1e-6,
    2e-6,
    3e-6,
    4e-6,
    5e-6,
    6e-6,
    8e-6,
    1e-5,
    1.5e-5,
    2e-5,
    3e-5,
    4e-5,
    6e-5,
    1e-4,
)
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.0,
    5.0,
    10.0,
)
DURATION_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    900.0,
)
QUEUE_BUCKETS = (
    1e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
FRONTEND_BUCKETS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 5.0)


class Metrics:
    """The server's metric objects on a registry of their own (one per app, so tests can
    build several apps in one process without name clashes)."""

    def __init__(self) -> None:
        # One declaration per metric, in /metrics order: long by nature, nothing to factor out.
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.sample_duration = Histogram(
            "sparrow_sample_duration_seconds",
            "Compute time per audio sample (frame time / samples)",
            ["core"],
            buckets=SAMPLE_BUCKETS,
            registry=r,
        )
        self.samples_generated = Counter(
            "sparrow_samples_generated", "Audio samples produced", ["core"], registry=r
        )
        self.worker_busy = Counter(
            "sparrow_worker_busy_seconds", "Seconds a worker spent computing", ["core"], registry=r
        )
        self.body_decode = Histogram(
            "sparrow_body_decode_seconds",
            "JSON request bodies decoded and validated (off the event loop), by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.time_to_first_audio = Histogram(
            "sparrow_time_to_first_audio_seconds",
            "Request start to first audio byte ready",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_duration = Histogram(
            "sparrow_request_duration_seconds",
            "Whole request or stream duration",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "sparrow_queue_wait_seconds",
            "Time a frame waited in a worker queue before compute",
            buckets=QUEUE_BUCKETS,
            registry=r,
        )
        self.real_time_factor = Histogram(
            "sparrow_real_time_factor",
            "Per stream: compute time / audio duration",
            buckets=RTF_BUCKETS,
            registry=r,
        )
        self.streams_in_flight = Gauge(
            "sparrow_streams_in_flight",
            "Streams currently assigned to each worker",
            ["core"],
            registry=r,
        )
        self.stream_capacity = Gauge(
            "sparrow_stream_capacity",
            "Real-time streams a worker admits now (from its measured cost, less late-frame cuts)",
            ["core"],
            registry=r,
        )
        self.measured_sample_seconds = Gauge(
            "sparrow_measured_sample_seconds",
            "A worker's current compute-per-sample figure: its start-up measurement, then a low "
            "quantile of its recent steady frame steps' CPU time / 300 over the share of the "
            "core it got; capacity follows it",
            ["core"],
            registry=r,
        )
        self.streams_refused = Counter(
            "sparrow_streams_refused", "Streams refused", ["reason"], registry=r
        )
        self.late_frames = Counter(
            "sparrow_late_frames",
            "Frames produced after their real-time deadline",
            ["core"],
            registry=r,
        )
        self.frames_redrawn = Counter(
            "sparrow_frames_redrawn",
            "Frame draws thrown away because the output reached full scale (clip_retries)",
            ["core"],
            registry=r,
        )
        self.clipped_frames = Counter(
            "sparrow_clipped_frames",
            "Frames sent whose output reached full scale after every redraw",
            ["core"],
            registry=r,
        )
        self.requests = Counter(
            "sparrow_requests", "Requests by route and status code", ["route", "status"], registry=r
        )
        self.frontend_sentence = Histogram(
            "sparrow_frontend_sentence_seconds",
            "Text front end time per sentence: a Festival process, its audio and the mel",
            buckets=FRONTEND_BUCKETS,
            registry=r,
        )
        self.frontend_processes = Gauge(
            "sparrow_frontend_processes",
            "Festival processes of the text front end, busy with a sentence or idle and warm",
            ["state"],
            registry=r,
        )
        self.worker_restarts = Counter(
            "sparrow_worker_restarts",
            "Worker processes restarted after dying",
            ["core"],
            registry=r,
        )

        self._per_core: dict[int, tuple[Any, ...]] = {}

    def watch_frontend(self, processes: Callable[[], tuple[int, int]]) -> None:
        """Read the front end's (busy, idle) Festival processes at each scrape."""
        self.frontend_processes.labels("busy").set_function(lambda: processes()[0])
        self.frontend_processes.labels("idle").set_function(lambda: processes()[1])

    def init_core(self, core: int) -> None:
        """Create a core's label sets at zero, so dashboards see them before the first stream."""
        c = str(core)
        for metric in (
            self.samples_generated,
            self.worker_busy,
            self.late_frames,
            self.frames_redrawn,
            self.clipped_frames,
            self.worker_restarts,
        ):
            metric.labels(core=c)
        self.sample_duration.labels(core=c)
        self.streams_in_flight.labels(core=c).set(0)

    def record_frames(
        self,
        core: int,
        samples_per_frame: int,
        computes: list[float],
        waits: list[float],
        late: int,
        redrawn: int = 0,
        clipped: int = 0,
    ) -> None:
        """A batch of frames a worker reported: per-frame compute and queue-wait seconds, how
        many were late, how many draws were redone and how many frames still reached full scale."""
        children = self._per_core.get(core)
        if children is None:  # labels() lookups cost more than the observations: do them once
            c = str(core)
            children = self._per_core[core] = (
                self.sample_duration.labels(core=c),
                self.samples_generated.labels(core=c),
                self.worker_busy.labels(core=c),
                self.late_frames.labels(core=c),
                self.frames_redrawn.labels(core=c),
                self.clipped_frames.labels(core=c),
            )
        hist, samples, busy, late_frames, redrawn_frames, clipped_frames = children
        for t in computes:
            hist.observe(t / samples_per_frame)
        for w in waits:
            self.queue_wait.observe(w)
        samples.inc(samples_per_frame * len(computes))
        busy.inc(sum(computes))
        if late:
            late_frames.inc(late)
        if redrawn:
            redrawn_frames.inc(redrawn)
        if clipped:
            clipped_frames.inc(clipped)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def mount_metrics(app: FastAPI, metrics: Metrics) -> None:
    """GET /metrics in Prometheus text format (open even when an API key is set, like /healthz)."""

    @app.get("/metrics", include_in_schema=False)
    def _metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


STATUS_AFTER_HEADERS = "status_after_headers"
"""Scope state key: the status a streamed response that failed after sending its 200 counts as."""


class RequestMetricsMiddleware:
    """Counts HTTP requests by route template and status, and times them to the last body byte.

    Pure ASGI (not BaseHTTPMiddleware) so streamed responses pass through untouched. Unmatched
    paths are labelled "other" to keep label cardinality bounded whatever clients request.
    Websocket routes record their own outcome (close code) in server/streaming/session.py.
    """

    SKIP = frozenset({"/metrics", "/healthz", "/readyz"})

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        scope.setdefault("state", {})["t_start"] = start  # time-to-first-audio counts from here
        status: dict[str, Any] = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "other"
            if path not in self.SKIP:
                # a stream that failed after its 200 went out counts under the error's status
                code = scope["state"].get(STATUS_AFTER_HEADERS, status["code"])
                self.metrics.requests.labels(route=path, status=str(code)).inc()
                if path.startswith("/v1/"):
                    self.metrics.request_duration.labels(route=path).observe(
                        time.monotonic() - start
                    )
