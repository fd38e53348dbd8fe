"""The REST contract: what the cloud answers and the edge parses (pydantic models)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ClassScore(BaseModel):
    class_id: int
    label: str
    confidence: float = Field(ge=0, le=1)


class ClassifyResponse(BaseModel):
    request_id: str
    model_id: str
    class_id: int
    label: str
    confidence: float = Field(ge=0, le=1)
    top_k: list[ClassScore]
    qf: int
    codec: str
    bytes: int = Field(description="size of the whole frame, header included")
    bits: int
    bpp: float = Field(description="bits of the whole frame per pixel of the encoder's input")
    latent_shape: list[int]
    input_size: list[int] = Field(description="(width, height) of the image the encoder saw")
    image_size: list[int] = Field(description="(width, height) of the image the camera captured")


class ModelInfo(BaseModel):
    model_id: str
    name: str
    architecture: str
    classes: list[dict[str, Any]] = Field(
        description="class_id, id (e.g. a WordNet id) and label of each class"
    )
    qfs: list[int]
    default_qf: int
    latent_channels: int
    stride: int
    preprocessing: dict[str, Any]
    limits: dict[str, Any] = Field(
        description="the largest frame served: max_input_pixels and max_input_side of the "
        "encoder's input (the bundle's own limits, capped by the service's settings)"
    )


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class ProblemDetails(BaseModel):
    """RFC 9457 problem details, as every error of the service is answered."""

    type: str
    title: str
    status: int
    detail: str = ""
    instance: str = ""
    request_id: str | None = None
