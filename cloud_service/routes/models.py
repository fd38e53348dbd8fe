"""``GET /v1/models``: the codecs served, their heads and decoders, for any key the service
accepts.

Cameras (upload keys) read it for the QFs and limits; consumers (read keys) and operators (admin
keys) for the classes their frames are labelled with.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from cloud_service.routes.common import ERRORS
from cloud_service.routes.query_params import strict_query
from cloud_service.state import (
    BearerDep,
    ReadyDep,
    StateDep,
    auth_enabled,
    bearer_token,
    identify,
    not_accepted,
)
from shared.schemas import HeadInfo, ModelInfo, ModelsResponse

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[strict_query])


def require_any_key(request: Request, state: StateDep, _bearer: BearerDep) -> None:
    """A key of any kind (from the environment or the key store), whenever keys are on."""
    if auth_enabled(state) and identify(state, bearer_token(request)) is None:
        raise not_accepted()


AnyKeyDep = Annotated[None, Depends(require_any_key)]


@router.get(
    "/models",
    response_model=ModelsResponse,
    summary="The codecs this service serves, with their heads and decoders",
    responses={s: ERRORS[s] for s in (401, 403, 503)},
)
def list_models(state: StateDep, _caller: AnyKeyDep, _ready: ReadyDep) -> ModelsResponse:
    infos = []
    for runtime in state.runtimes.values():
        m = runtime.manifest
        roles = ["decoder"] + ([m.enhancement.decoder] if m.enhancement is not None else [])
        decoders = [r for r in roles if r in m.files]
        # Decoders added on the cloud side (--decoder), by name and the QFs they render.
        decoders += [
            f"{d.name} (QF {', '.join(map(str, sorted(d.qfs)))})" for d in runtime.decoders
        ]
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
                aliases=m.aliases,
                default_head=runtime.default_head,
                heads=[HeadInfo(**h.describe()) for h in runtime.heads.values()],
                decoders=decoders,
            )
        )
    return ModelsResponse(models=infos)
