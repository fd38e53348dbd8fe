from __future__ import annotations

from fastapi import APIRouter

from cloud_service.routes.inference import ERRORS
from cloud_service.state import AuthDep, ReadyDep, StateDep
from shared.schemas import ModelInfo, ModelsResponse

router = APIRouter(prefix="/v1", tags=["models"])


@router.get(
    "/models",
    response_model=ModelsResponse,
    summary="The model bundles this service serves",
    responses={s: ERRORS[s] for s in (401, 403, 503)},
)
def list_models(state: StateDep, _caller: AuthDep, _ready: ReadyDep) -> ModelsResponse:
    infos = []
    for runtime in state.runtimes.values():
        m = runtime.manifest
        infos.append(
            ModelInfo(
                model_id=m.model_id,
                name=m.name,
                architecture=m.architecture,
                classes=[{"class_id": c.index, "id": c.id, "label": c.name} for c in m.classes],
                qfs=m.qfs,
                default_qf=m.default_qf,
                latent_channels=m.latent.channels,
                enhancement=(
                    None
                    if m.enhancement is None
                    else {"channels": m.enhancement.channels, "from_qf": m.enhancement.from_qf}
                ),
                stride=m.latent.stride,
                preprocessing=m.preprocessing.model_dump(),
                limits=runtime.limits.model_dump(),
            )
        )
    return ModelsResponse(models=infos)
