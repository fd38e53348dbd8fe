"""The model bundle: what a camera and a cloud must agree on besides the frame format.

A bundle is a folder::

    manifest.json      this schema: ids, classes, preprocessing, latent rule, QFs, tables
    encoder.onnx       g_a: float32 (N, 3, H, W) in [0, 1] -> y (N, C, H/s, W/s) in [0, 1]
    decoder.onnx       g_s: ŷ (N, C, h, w) -> x̂ (N, 3, h·s, w·s) in [0, 1]
    classifier.onnx    h_c: ŷ (N, C, h, w) -> logits (N, classes)
    MODEL_CARD.md      how it was trained and how well it does

The id a frame carries names the **codec**: what makes and reads the bitstream, and nothing else.
It is the first 8 bytes of SHA-256 over the canonical JSON of ``CODEC_FIELDS`` (preprocessing,
latent geometry, QFs, entropy tables, the enhancement layer) and the SHA-256 of the graphs that
make symbols (``encoder`` and an enhancement layer's encoder). The classifier and the decoders are
artifacts that *read* the codec (``shared.heads``): replacing them, adding an INT8 encoder (it
makes the same bitstream), renaming the bundle, re-measuring it or changing its ``limits`` leaves
the id alone, so no camera has to change. Every listed file is still checked against its own
SHA-256 when a bundle is loaded.

Format version 1 (bundles sealed before codec ids) hashed the whole manifest and every file into
the id. Such a manifest still loads: it is checked against that older rule, then read as version 2
with the old id kept in ``aliases``, so frames made by cameras that hold it keep decoding.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.measurements import Measurements
from shared.quantize import check_qf, dequantize, quantize
from shared.reject import EmbeddedHead

MANIFEST_NAME = "manifest.json"
# Format 1's id (and reference bundles' ids): every field but these. The id itself, serving
# policy, and what was measured after sealing.
UNSEALED = {"model_id", "limits", "measured", "aliases", "head"}
# Format 2's codec id: only what decides which bits a given image becomes and how they are read.
CODEC_FIELDS = ("format", "preprocessing", "latent", "qfs", "tables", "enhancement")
# Fields added after bundles were sealed without them: left out of the id while unset, so those
# bundles keep their ids.
SEALED_WHEN_SET = {"enhancement"}
M = TypeVar("M", bound="SealedManifest")


class Preprocessing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["center_crop", "whole"] = "center_crop"
    resize_short: int = Field(224, ge=1)
    size: int = Field(224, ge=1)
    resample: Literal["bilinear"] = "bilinear"
    color: Literal["RGB"] = "RGB"
    layout: Literal["NCHW"] = "NCHW"
    scale: float = 1 / 255  # uint8 pixels -> [0, 1]; mean/std normalisation is inside encoder.onnx


class LatentRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: int = Field(ge=1)
    stride: int = Field(ge=1)
    low: float = 0.0
    high: float = 1.0

    def shape_for(self, height: int, width: int) -> tuple[int, int, int]:
        if height % self.stride or width % self.stride:
            raise ValueError(
                f"input {width}x{height} is not a multiple of the stride {self.stride}"
            )
        return self.channels, height // self.stride, width // self.stride


class Enhancement(BaseModel):
    """An enhancement layer: ``channels`` more latent channels for reconstruction, sent after the
    base latent from QF ``from_qf`` up, made by the graph ``files[encoder]`` and read only by
    ``files[decoder]``.

    The stream is scalable, base plus enhancement (as in Choi and Bajić, "Scalable image coding
    for humans and machines", IEEE TIP 2022): the base latent (``latent.channels``) is what the
    classifier reads at every QF; below ``from_qf`` a frame holds the base alone, so the low QFs
    cost the camera and the cloud exactly what they cost without the layer. With ``base_qf``, a
    frame from ``from_qf`` up quantizes its base latent at ``min(QF, base_qf)`` and only the layer
    at its QF: past the QF where top-1 stops rising, finer base symbols cost bits and buy nothing."""

    model_config = ConfigDict(extra="forbid")

    channels: int = Field(ge=1)
    from_qf: int
    encoder: str  # the ``files`` role of the graph: image -> the layer's channels
    decoder: str  # the ``files`` role of the graph: the layer's channels -> image
    base_qf: int | None = None  # None: the base latent takes the frame's QF, as without a layer

    def on(self, qf: int) -> bool:
        return qf >= self.from_qf

    def base_qf_at(self, qf: int) -> int:
        """The QF the base latent is quantized at in a frame of QF ``qf``."""
        return min(qf, self.base_qf) if self.on(qf) and self.base_qf is not None else qf


class ServingLimits(BaseModel):
    """The largest frame a bundle is meant to serve. Work per frame grows with the latent's area
    (the decoder's activations at 1024² are ~0.4 GB), so a service refuses larger frames before it
    decodes a byte of them."""

    model_config = ConfigDict(extra="forbid")

    # 1 MiPx: a 1024x1024 whole-image frame, ~0.4 s and ~0.4 GB to reconstruct on one core.
    max_input_pixels: int = Field(1 << 20, ge=1)
    # Longest side of the encoder's input, so a 16 x 65536 strip cannot pass the pixel bound.
    max_input_side: int = Field(2048, ge=1)


class ClassInfo(BaseModel):
    index: int = Field(ge=0)
    id: str
    name: str


class BundleFile(BaseModel):
    path: str
    sha256: str


class SealedManifest(BaseModel):
    """What every bundle kind's manifest has: a model id sealed over its content and the files it
    lists (SPIC bundles here, reference-classifier bundles in ``models/reference_bundle.py``)."""

    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(default="", pattern=r"^([0-9a-f]{16})?$")
    name: str
    architecture: str
    architecture_config: dict[str, Any] = Field(default_factory=dict)
    classes: list[ClassInfo]
    preprocessing: Preprocessing = Field(default_factory=lambda: Preprocessing())
    files: dict[str, BundleFile]


class Manifest(SealedManifest):
    format: Literal["spic-bundle"] = "spic-bundle"
    format_version: Literal[1, 2] = 2
    # Ids this codec was known by before (format 1's whole-bundle ids): frames carrying one of
    # them are this codec's frames.
    aliases: list[str] = Field(default_factory=list)
    # The bundle's own classifier as a head (shared.heads): its name and reject rule.
    head: EmbeddedHead | None = None
    latent: LatentRule
    qfs: list[int]
    default_qf: int
    limits: ServingLimits | None = None  # None: the service's own settings decide
    # Measured after sealing, so outside the model id; what `--bpp` picks a QF from.
    measured: Measurements | None = None
    # Per QF (as a string key, JSON objects have no int keys): (C, QF + 1) integer counts.
    tables: dict[str, list[list[int]]]
    enhancement: Enhancement | None = None  # None: every channel is the classifier's

    @field_validator("qfs")
    @classmethod
    def _qfs_valid(cls, v: list[int]) -> list[int]:
        for q in v:
            check_qf(q)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.default_qf not in self.qfs:
            raise ValueError(f"default_qf {self.default_qf} is not among qfs {self.qfs}")
        for q in self.qfs:
            t = self.tables.get(str(q))
            if t is None:
                raise ValueError(f"no frequency table for QF {q}")
            rows = self.channels_at(q)
            if len(t) != rows or any(len(row) != q + 1 for row in t):
                raise ValueError(f"table for QF {q} must be {rows} x {q + 1}")
        if [c.index for c in self.classes] != list(range(len(self.classes))):
            raise ValueError("class indices must be 0..n-1 in order")
        e = self.enhancement
        if e is not None:
            if e.from_qf not in self.qfs:
                raise ValueError(f"enhancement from_qf {e.from_qf} is not among qfs {self.qfs}")
            if e.base_qf is not None and e.base_qf not in self.qfs:
                raise ValueError(f"enhancement base_qf {e.base_qf} is not among qfs {self.qfs}")
            for role in (e.encoder, e.decoder):
                if role not in self.files:
                    raise ValueError(f"enhancement graph {role!r} is not among the files")
        return self

    def channels_at(self, qf: int) -> int:
        """The latent channels of a frame made at ``qf``: the base, plus an enhancement layer's
        from its QF up."""
        e = self.enhancement
        return self.latent.channels + (e.channels if e is not None and e.on(qf) else 0)

    def base_qf_at(self, qf: int) -> int:
        """The QF of the base latent's symbols in a frame made at ``qf``: the most any of them
        may be (an enhancement layer's own symbols go up to ``qf``)."""
        e = self.enhancement
        return e.base_qf_at(qf) if e is not None else qf

    def check_symbols(self, symbols: np.ndarray, qf: int) -> None:
        """ValueError unless every symbol of a frame made at ``qf`` is one ``quantize_latent``
        can make: the base channels up to ``base_qf_at(qf)``, a layer's up to ``qf``. A larger
        one would dequantize outside [0, 1]."""
        c = self.latent.channels
        for part, ceiling in ((symbols[:c], self.base_qf_at(qf)), (symbols[c:], qf)):
            top = int(part.max(initial=0))
            if top > ceiling:
                raise ValueError(f"symbol {top} exceeds QF {ceiling}")

    def quantize_latent(self, y: np.ndarray, qf: int) -> np.ndarray:
        """The (C, h, w) symbols of a frame made at ``qf`` from an encoder's output ``y``: the
        base latent, and an enhancement layer's channels after it when ``qf`` sends them."""
        c, e = self.latent.channels, self.enhancement
        if e is None or not e.on(qf):
            return quantize(y[:c], qf)
        layer = y[c : c + e.channels]
        return np.concatenate([quantize(y[:c], self.base_qf_at(qf)), quantize(layer, qf)])

    def dequantize_latent(self, symbols: np.ndarray, qf: int) -> np.ndarray:
        """``quantize_latent``'s inverse: a frame's symbols back to latent values, float32."""
        c, e = self.latent.channels, self.enhancement
        if e is None or not e.on(qf):
            return dequantize(symbols, qf)
        base, layer = symbols[:c], symbols[c:]
        return np.concatenate([dequantize(base, self.base_qf_at(qf)), dequantize(layer, qf)])

    def decoder_role(self, qf: int) -> str:
        """The ``files`` role of the graph that reconstructs a frame made at ``qf``."""
        e = self.enhancement
        return e.decoder if e is not None and e.on(qf) else "decoder"

    @property
    def model_id_bytes(self) -> bytes:
        return bytes.fromhex(self.model_id)

    def table(self, qf: int) -> np.ndarray:
        return np.asarray(self.tables[str(qf)], dtype=np.int64)

    def content_hash(self) -> str:
        """The id this manifest should carry: the codec id (format 2), or format 1's id."""
        return codec_hash(self) if self.format_version == 2 else content_hash(self)

    def codec_roles(self) -> list[str]:
        """The ``files`` roles whose graphs make symbols, and so are part of the codec id."""
        e = self.enhancement
        return ["encoder"] + ([e.encoder] if e is not None else [])

    @property
    def ids(self) -> list[str]:
        """Every id a frame of this codec may carry: the codec id, then its aliases."""
        return [self.model_id, *self.aliases]

    def qf_for_bpp(self, target_bpp: float, codec: str = "rans", int8: bool = False) -> int:
        """The QF whose measured rate is the highest at or below ``target_bpp`` (the best quality
        within the budget); the lowest-rate QF when even that is above it. Raise ValueError when
        the bundle has no measurement for this codec and encoder."""
        encoder = "int8" if int8 else "fp32"
        points = [
            p
            for p in (self.measured.points if self.measured else [])
            if p.codec == codec and p.encoder == encoder and p.qf in self.qfs
        ]
        if not points:
            raise ValueError(
                f"bundle {self.name} has no measured rates for {codec} with the {encoder} "
                "encoder: run spic-card on it, or choose a QF"
            )
        within = [p for p in points if p.bpp <= target_bpp]
        best = max(within, key=lambda p: p.bpp) if within else min(points, key=lambda p: p.bpp)
        return best.qf


def codec_hash(manifest: Manifest) -> str:
    """First 8 bytes of SHA-256 over the codec's fields and its symbol-making graphs' hashes."""
    body = manifest.model_dump(mode="json", include=set(CODEC_FIELDS))
    body["graphs"] = {role: manifest.files[role].sha256 for role in manifest.codec_roles()}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


def upgrade(manifest: Manifest) -> Manifest:
    """A format-1 manifest read as format 2: the codec id, the old id kept as an alias."""
    if manifest.format_version == 2:
        return manifest
    new = manifest.model_copy(update={"format_version": 2})
    codec_id = codec_hash(new)
    aliases = [a for a in [manifest.model_id, *manifest.aliases] if a != codec_id]
    return new.model_copy(update={"model_id": codec_id, "aliases": aliases})


def content_hash(manifest: SealedManifest) -> str:
    """First 8 bytes of SHA-256 over a manifest's canonical JSON, without its ``model_id``.

    Shared by every bundle kind that has ``model_id`` and ``files`` fields (SPIC bundles here,
    reference-classifier bundles in ``evaluation/reference.py``).
    """
    body = manifest.model_dump(mode="json", exclude=UNSEALED | _unset_additions(manifest))
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


def _unset_additions(manifest: SealedManifest) -> set[str]:
    return {f for f in SEALED_WHEN_SET if getattr(manifest, f, None) is None}


def seal(bundle_dir: Path, manifest: M) -> M:
    """The manifest with every listed file's SHA-256 filled in and its id set (a SPIC bundle's
    codec id; one read from format 1 keeps that format's id among its aliases)."""
    files = seal_files(bundle_dir, manifest.files)
    manifest = manifest.model_copy(update={"files": files, "model_id": ""})
    return manifest.model_copy(update={"model_id": _id_of(manifest)})


def seal_files(folder: Path, files: dict[str, BundleFile]) -> dict[str, BundleFile]:
    """Every listed file with its SHA-256 filled in."""
    return {
        role: BundleFile(path=f.path, sha256=sha256_file(folder / f.path))
        for role, f in files.items()
    }


def _id_of(manifest: SealedManifest) -> str:
    return manifest.content_hash() if isinstance(manifest, Manifest) else content_hash(manifest)


def verify(bundle_dir: Path, manifest: SealedManifest) -> None:
    """Raise ValueError unless every listed file and the model id match the manifest."""
    for role, f in manifest.files.items():
        if sha256_file(bundle_dir / f.path) != f.sha256:
            raise ValueError(
                f"bundle file {f.path} ({role}) does not match its hash in the manifest"
            )
    if _id_of(manifest) != manifest.model_id:
        raise ValueError(f"manifest model id {manifest.model_id} does not match its content")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(bundle_dir: str | Path, check: bool = True) -> Manifest:
    """Read a bundle's manifest; with ``check``, verify every file hash and the model id."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {bundle_dir}: not a SPIC model bundle")
    manifest = Manifest.model_validate_json(path.read_text())
    if check:
        verify(bundle_dir, manifest)
    return upgrade(manifest)


def write_manifest(bundle_dir: str | Path, manifest: Manifest) -> Manifest:
    """Hash the bundle's files, set the model id, and write manifest.json."""
    bundle_dir = Path(bundle_dir)
    manifest = seal(bundle_dir, manifest)
    (bundle_dir / MANIFEST_NAME).write_text(_to_json(manifest))
    return manifest


def record_measurements(bundle_dir: str | Path, measured: Measurements) -> Manifest:
    """Write what was measured on a sealed bundle into its manifest; its model id is unchanged."""
    bundle_dir = Path(bundle_dir)
    manifest = load_manifest(bundle_dir).model_copy(update={"measured": measured})
    (bundle_dir / MANIFEST_NAME).write_text(_to_json(manifest))
    return manifest


def _to_json(manifest: Manifest) -> str:
    """Indented JSON, but every list of numbers on one line (the tables are ~6k integers)."""
    body = manifest.model_dump(mode="json", exclude=_unset_additions(manifest))
    text = json.dumps(body, indent=1)
    return (
        re.sub(
            r"\[\s*([-0-9.e, \n]+?)\s*\]",
            lambda m: "[" + ",".join(m.group(1).split()).replace(",,", ",") + "]",
            text,
        )
        + "\n"
    )
