"""The REST contract: what the cloud answers and the edge parses (pydantic models)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# A camera's id (X-Device-Id, a key's device): a slug of 1 to 64 characters.
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ClassScore(BaseModel):
    class_id: int
    label: str
    confidence: float = Field(ge=0, le=1)


class HeadPrediction(BaseModel):
    """One head's answer for a frame (``?heads=``): ``label`` null when the head's reject rule
    says the frame is unlike what it was trained on; ``top_k`` keeps the scores either way."""

    head_id: str
    label: str | None
    confidence: float = Field(ge=0, le=1, description="the largest class probability")
    unknown: bool = False
    score: float | None = Field(None, description="the reject rule's score; null without a rule")
    top_k: list[ClassScore]


class Prediction(BaseModel):
    """What the cloud concluded from one frame, as answered and as stored: the top-level fields
    are the codec's default head's."""

    model_id: str
    qf: int
    bytes: int = Field(description="size of the whole frame, header included")
    bpp: float = Field(description="bits of the whole frame per pixel of the encoder's input")
    class_id: int = Field(description="the most probable class, also when the frame is unknown")
    label: str | None = Field(description="the most probable class's label; null when unknown")
    confidence: float = Field(ge=0, le=1)
    unknown: bool = Field(False, description="the default head's reject rule refused the frame")
    top_k: list[ClassScore]
    heads: dict[str, HeadPrediction] | None = Field(
        None,
        description="per head: in an answer, the heads asked for (?heads=); in a stored frame, "
        "every head the codec served when it came",
    )


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
    repeat: bool = Field(
        False,
        description="a skip frame of a stream: its answer is frame_id's, counted on that row "
        "(its repeats), not stored as a row of its own",
    )


class StoredFrame(Prediction):
    """A classified frame as the results store keeps it (its bytes at ``bitstream``)."""

    frame_id: int
    device_id: str
    captured_at: str | None = Field(description="RFC 3339, from X-Captured-At; None if not sent")
    received_at: str = Field(description="RFC 3339, when the cloud received the frame")
    bitstream: str = Field(description="URL of the frame's bytes")
    reconstruction: str = Field(description="URL of the frame re-rendered as PNG")
    repeats: int = Field(0, description="skip frames of a stream that repeated this answer since")
    last_repeat_at: str | None = Field(None, description="RFC 3339: the latest of those repeats")
    change: Literal["label", "confidence"] | None = Field(
        None,
        description="how the answer differs from the camera's frame before it: another label "
        "(or unknown; a camera's first frame too), or the confidence across one of the cloud's "
        "confidence bounds; null: the same answer",
    )


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
    aliases: list[str] = Field(
        default_factory=list, description="older ids of this codec its frames may carry"
    )
    default_head: str = Field("", description="the head whose answer is the top-level one")
    heads: list[HeadInfo] = Field(default_factory=list, description="every head served")
    decoders: list[str] = Field(default_factory=list, description="the reconstruction graphs")


class HeadInfo(BaseModel):
    """A classifier head served for a codec (``Head.describe()``)."""

    model_config = ConfigDict(extra="allow")

    name: str
    head_id: str
    codec_id: str
    classes: list[dict[str, Any]]
    reject: dict[str, Any] | None = Field(description="score, threshold and accept, or null")


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
