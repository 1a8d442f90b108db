"""GET /v1/models, /v1/models/{id} and /v1/audio/models: the served model, its hyperparameters and
sparsity, each worker's speed, and the names that mean it (server/catalog.py)."""

from __future__ import annotations

from fastapi import APIRouter

from server.catalog import accepts_model, model_aliases
from server.deps import ApiKey, PoolDep
from server.errors import UnknownModel
from server.schemas import AudioModelList, ModelCard, ModelList, ModelRef, WorkerStatus

router = APIRouter(tags=["models"], dependencies=[ApiKey])


def model_card(pool: PoolDep) -> ModelCard:
    info = pool.model_info
    manifest = info.get("manifest") or {}
    created = manifest.get("created")
    served = info.get("name") or pool.model_dir.name
    return ModelCard(
        id=served,
        root=served,
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
    """OpenAI-style retrieve by any name the speech route accepts (the served model's, `sparrow`,
    an OpenAI TTS name): the served model's card under that id; 404 for any other name."""
    card = model_card(pool)
    if not accepts_model(model_id, card.id):
        raise UnknownModel(
            f"model {model_id!r} does not exist here; this server runs {card.id!r}", "model"
        )
    return card.model_copy(update={"id": model_id})


@router.get("/v1/audio/models", response_model=AudioModelList)
def list_audio_models(pool: PoolDep) -> AudioModelList:
    """The model ids chat front ends offer for a custom OpenAI speech server: the served model,
    then the aliases that mean it."""
    served = pool.model_info.get("name") or pool.model_dir.name
    return AudioModelList(models=[ModelRef(id=name) for name in model_aliases(served)])
