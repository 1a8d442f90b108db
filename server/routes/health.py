"""Liveness and readiness probes (no API key: orchestrators call them)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from server.deps import PoolDep
from server.schemas import Health, Readiness, WorkerStatus

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(pool: PoolDep) -> JSONResponse:
    """The process and its event loop answer, and its workers can start: 503 (restart the
    server) once no worker could start or load the model; while starting it is 200."""
    if pool.fatal_error:
        return JSONResponse(
            Health(status="failed", error=pool.fatal_error).model_dump(), status_code=503
        )
    return JSONResponse(Health(status="ok").model_dump(exclude_none=True))


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(pool: PoolDep) -> JSONResponse:
    """200 once every worker has loaded the model and measured its core; 503 while starting,
    while a worker restarts, and while draining for shutdown (take the instance out of rotation)."""
    body = Readiness(
        ready=pool.ready,
        draining=pool.draining,
        streams_in_flight=pool.streams_in_flight,
        workers=[WorkerStatus(**w) for w in pool.worker_status()],
        error=pool.fatal_error,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
