"""Decoders: cloud-side artifacts that turn a codec's base latent into a picture.

A decoder is a folder, apart from the codec whose latents it reads, as a head is (shared.heads)::

    decoder.json   DecoderManifest: name, decoder id, the codec id it reads, the QFs it serves,
                   the latent it reads ("base"), what was measured and the command that made it
    decoder.onnx   latent (N, C, h, w) float32 -> image (N, 3, 16h, 16w) in [0, 1], the same
                   interface as a bundle's decoder.onnx

The decoder id is the first 16 hex digits of SHA-256 over decoder.json's canonical JSON without
the id and what was measured, with every listed file's SHA-256 in it. A decoder names its codec
(``codec_id``): ``SpicCodec.add_decoder`` refuses one that reads another codec, and registering
one changes nothing a camera sends, so frames already in the field render better with no camera
change (``models/decoder_train.py`` makes them; docs/research/decoder.md measures them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shared.artifacts import artifact_id, load_artifact, write_artifact
from shared.heads import HEAD_NAME
from shared.manifest import BundleFile
from shared.onnx_session import make_session
from shared.quantize import check_qf

DECODER_MANIFEST = "decoder.json"


class DecoderMeasured(BaseModel):
    """What ``spic-decoder train`` measured on a seeded val subset, through onnxruntime."""

    model_config = ConfigDict(extra="allow")

    dataset: str
    n_val: int = Field(ge=0)
    per_qf: dict[str, dict[str, float]] = Field(description="QF -> {psnr, ssim}")
    train_seconds: float = Field(ge=0)
    train_steps: int = Field(ge=0)
    loss: str
    command: str


class DecoderManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["spic-decoder"] = "spic-decoder"
    format_version: Literal[1] = 1
    decoder_id: str = Field(default="", pattern=r"^([0-9a-f]{16})?$")
    name: str = Field(pattern=HEAD_NAME)
    codec_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    qfs: list[int] = Field(min_length=1)
    input: Literal["base"] = "base"  # the base latent's channels (an enhancement layer's: not yet)
    architecture: str
    files: dict[str, BundleFile]
    measured: DecoderMeasured | None = None

    def content_hash(self) -> str:
        return artifact_id(self, "decoder_id")


def write_decoder(folder: Path, manifest: DecoderManifest) -> DecoderManifest:
    """Hash the decoder's files, set its id and write decoder.json."""
    for q in manifest.qfs:
        check_qf(q)
    return write_artifact(folder, manifest, "decoder_id", DECODER_MANIFEST)


def load_decoder_manifest(folder: Path) -> DecoderManifest:
    """Read and verify a decoder folder: every file against its hash, the id against the content."""
    return load_artifact(folder, DecoderManifest, "decoder_id", DECODER_MANIFEST, "decoder")


class Decoder:
    """A decoder opened for serving."""

    def __init__(
        self, manifest: DecoderManifest, graph: Path, threads: int = 1, arena: bool = True
    ):
        self.manifest = manifest
        self.name, self.decoder_id, self.codec_id = (
            manifest.name,
            manifest.decoder_id,
            manifest.codec_id,
        )
        self.qfs = frozenset(manifest.qfs)
        self.session = make_session(graph, threads=threads, cache_dir=False, arena=arena)

    @classmethod
    def open(cls, folder: str | Path, threads: int = 1, arena: bool = True) -> Decoder:
        folder = Path(folder)
        m = load_decoder_manifest(folder)
        return cls(m, folder / m.files["graph"].path, threads, arena)

    def serves(self, qf: int) -> bool:
        return qf in self.qfs

    def run(self, latents: np.ndarray) -> np.ndarray:
        """(N, C, h, w) base latents -> (N, 3, H, W) float32 in [0, 1]."""
        out: np.ndarray = self.session.run(None, {"latent": latents.astype(np.float32)})[0]
        return out
