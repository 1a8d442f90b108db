"""GET /v1/models and /v1/models/{id}: the served model, its hyperparameters and sparsity, and
each worker's speed."""

from __future__ import annotations

from fastapi import APIRouter

from server.deps import ApiKey, PoolDep
from server.errors import UnknownModel
from server.schemas import ModelCard, ModelList, WorkerStatus

router = APIRouter(tags=["models"], dependencies=[ApiKey])


def model_card(pool: PoolDep) -> ModelCard:
    info = pool.model_info
    manifest = info.get("manifest") or {}
    created = manifest.get("created")
    return ModelCard(
        id=info.get("name") or pool.model_dir.name,
        created=_epoch(created),
        description=manifest.get("description"),
        trained=manifest.get("trained"),
        isa=info.get("isa"),
        hyperparameters=info.get("config") or manifest.get("config") or {},
        sparsity=manifest.get("sparsity") or {},
        tvm_version=manifest.get("tvm_version"),
        workers=[WorkerStatus(**w) for w in pool.worker_status()],
    )


def _epoch(iso: object) -> int:
    from datetime import datetime

    if isinstance(iso, str):
        try:
            return int(datetime.fromisoformat(iso).timestamp())
        except ValueError:
            pass
    return 0


@router.get("/v1/models", response_model=ModelList)
def list_models(pool: PoolDep) -> ModelList:
    """OpenAI-style model list (one entry: the model this server runs), with Sparrow's details."""
    return ModelList(data=[model_card(pool)])


@router.get("/v1/models/{model_id}", response_model=ModelCard)
def retrieve_model(model_id: str, pool: PoolDep) -> ModelCard:
    """OpenAI-style retrieve: the served model by its name (or `sparrow`); 404 for any other."""
    card = model_card(pool)
    if model_id not in {card.id, "sparrow"}:
        raise UnknownModel(
            f"model {model_id!r} does not exist here; this server runs {card.id!r}", "model"
        )
    return card
