"""What ``spic-card`` measured on a sealed bundle: rate and quality per QF, outside the codec id."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OperatingPoint(BaseModel):
    """One QF's measured rate and quality: real frames of a labelled set, encoded, decoded and
    classified on the latent (``spic-card``). bpp is bits of the whole frame per pixel."""

    model_config = ConfigDict(extra="forbid")

    qf: int
    codec: Literal["rans", "huffman"]
    encoder: Literal["fp32", "int8"] = "fp32"
    bpp: float = Field(gt=0)
    top1: float | None = Field(None, ge=0, le=1)
    psnr: float | None = None
    ssim: float | None = None


class Measurements(BaseModel):
    """What ``spic-card`` measured on the sealed bundle, and how (its command and data)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    n_images: int = Field(ge=1)
    command: str
    points: list[OperatingPoint]
