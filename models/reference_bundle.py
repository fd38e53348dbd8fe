"""Reference-classifier bundles: a pixel-domain CNN as one ONNX file plus a manifest.

A reference bundle is a folder::

    manifest.json      ReferenceManifest below: classes, preprocessing, what it was trained on
    classifier.onnx    float32 image (N, 3, H, W) in [0, 1] -> logits (N, classes)
    MODEL_CARD.md      how it was made and how well it does

It is written by ``spic-train-reference`` (``models/train_reference.py``) and run by ``spic-eval``
(``evaluation/reference.py``) and by distillation (``models/distill.py``) through
``ReferenceModel``, with onnxruntime only: this module imports no torch. The model id is
computed exactly as for SPIC bundles (``shared.manifest``): a hash of the manifest and of every file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict

from shared.manifest import SealedManifest, seal, verify

MANIFEST = "manifest.json"
ONNX_FILE = "classifier.onnx"


class FineTune(BaseModel):
    """What a fine-tuned reference saw: images decoded by these codecs at these qualities."""

    model_config = ConfigDict(extra="forbid")

    base_model_id: str
    qualities: dict[str, int]  # codec -> Pillow quality
    target_bpp: float  # the SPIC rate the qualities were matched to (bits per pixel, whole file)
    target_from: str  # where target_bpp came from, e.g. "bundle 2290519bfc38c845 at QF16"


class ReferenceManifest(SealedManifest):
    format: Literal["spic-reference-bundle"] = "spic-reference-bundle"
    format_version: Literal[1] = 1
    label: str  # the classifier's name in results and reports
    finetune: FineTune | None = None
    val_top1: float | None = None  # on clean 224² center crops of the validation split


def write_reference_manifest(bundle: Path, manifest: ReferenceManifest) -> ReferenceManifest:
    manifest = seal(bundle, manifest)
    (bundle / MANIFEST).write_text(manifest.model_dump_json(indent=1) + "\n")
    return manifest


def load_reference_manifest(bundle: str | Path) -> ReferenceManifest:
    """Read and verify a reference bundle's manifest (file hashes and model id)."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {bundle}: not a reference bundle")
    manifest = ReferenceManifest.model_validate_json(path.read_text())
    verify(bundle, manifest)
    return manifest


def check_classes(manifest: ReferenceManifest, class_ids: list[str], user: str) -> None:
    """Refuse a reference whose classes (ids, in order) are not ``user``'s, naming both."""
    ours = [c.id for c in manifest.classes]
    if ours != class_ids:
        raise ValueError(
            f"reference bundle {manifest.model_id} ({manifest.label}) has classes {ours}, "
            f"{user} has {class_ids}"
        )


class ReferenceModel:
    """A reference bundle loaded for inference: logits of float (N, 3, H, W) images in [0, 1]."""

    def __init__(self, bundle: str | Path, threads: int = 2):
        self.bundle = Path(bundle)
        self.manifest = load_reference_manifest(self.bundle)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(self.bundle / self.manifest.files["classifier"].path),
            opts,
            providers=["CPUExecutionProvider"],
        )

    @property
    def label(self) -> str:
        return self.manifest.label

    def check_classes(self, class_ids: list[str], user: str = "the evaluation") -> None:
        check_classes(self.manifest, class_ids, user)

    def logits(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.session.run(None, {"image": np.ascontiguousarray(x, np.float32)})[0]
        return out
