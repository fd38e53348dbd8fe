"""The REST contract: what the cloud answers and the edge parses (pydantic models)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

# A camera's id (X-Device-Id, a key's device): a slug of 1 to 64 characters.
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ClassScore(BaseModel):
    class_id: int
    label: str
    confidence: float = Field(ge=0, le=1)


class Prediction(BaseModel):
    """What the cloud concluded from one frame, as answered and as stored."""

    model_id: str
    qf: int
    bytes: int = Field(description="size of the whole frame, header included")
    bpp: float = Field(description="bits of the whole frame per pixel of the encoder's input")
    class_id: int
    label: str
    confidence: float = Field(ge=0, le=1)
    top_k: list[ClassScore]


class ClassifyResponse(Prediction):
    request_id: str
    codec: str
    bits: int
    latent_shape: list[int]
    input_size: list[int] = Field(description="(width, height) of the image the encoder saw")
    image_size: list[int] = Field(description="(width, height) of the image the camera captured")
    frame_id: int | None = Field(
        None, description="the frame's id in the results store (GET /v1/frames/{frame_id})"
    )
    device_id: str = Field("unknown", description="the X-Device-Id the frame came with")


class StoredFrame(Prediction):
    """A classified frame as the results store keeps it (its bytes at ``bitstream``)."""

    frame_id: int
    device_id: str
    captured_at: str | None = Field(description="RFC 3339, from X-Captured-At; None if not sent")
    received_at: str = Field(description="RFC 3339, when the cloud received the frame")
    bitstream: str = Field(description="URL of the frame's bytes")
    reconstruction: str = Field(description="URL of the frame re-rendered as PNG")


class FramesPage(BaseModel):
    frames: list[StoredFrame]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next (older) page; None at the end"
    )


class ModelInfo(BaseModel):
    model_id: str
    name: str
    architecture: str
    classes: list[dict[str, Any]] = Field(
        description="class_id, id (e.g. a WordNet id) and label of each class"
    )
    qfs: list[int]
    default_qf: int
    latent_channels: int = Field(description="channels of the base latent, which is classified")
    enhancement: dict[str, Any] | None = Field(
        None,
        description="an enhancement layer for reconstruction, if the bundle has one: its "
        "channels, sent after the base latent's from QF from_qf up",
    )
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
