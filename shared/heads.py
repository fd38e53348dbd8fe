"""Classifier heads: artifacts that read a codec's latent and answer a label, or "unknown".

A head is a folder, apart from the codec it reads::

    head.json      HeadManifest: name, head id, the codec id it reads, classes, reject rule, card
    head.onnx      latent (N, C, h, w) float32 -> logits (N, K) [, features (N, D)]
    bank.npy       the reject rule's bank, when its rule is ``knn`` or ``oe`` (``shared.reject``)
    detector.json  the ``oe`` rule's detector (``shared.reject_oe``)
    HEAD_CARD.md   how it was trained and how well it does (``spic-head``)

The head id is the first 8 bytes of SHA-256 over head.json's canonical JSON without the id and
what was measured after sealing, with every listed file's SHA-256 in it. A head names the codec
it reads (``codec_id``): the cloud serves it for that codec's frames only, and replacing it never
changes what a camera sends. A bundle's own ``classifier.onnx`` is a head too
(``Head.embedded``): its name and reject rule are in the bundle's manifest (``Manifest.head``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shared.artifacts import artifact_id, load_artifact, write_artifact
from shared.manifest import BundleFile, ClassInfo, Manifest
from shared.onnx_session import make_session
from shared.reject import RejectRule, familiar_features, load_bank, scores, softmax
from shared.reject_oe import OEDetector, load_detector, oe_score

HEAD_MANIFEST = "head.json"
HEAD_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
# Fields left out of the head id: the id itself and what was measured after sealing.


class HeadMeasured(BaseModel):
    """What ``spic-head`` measured on the head's validation split."""

    model_config = ConfigDict(extra="allow")

    dataset: str
    n_val: int = Field(ge=0)
    top1: dict[str, float] = Field(description="val top-1 per QF (as a string key)")
    train_seconds: float = Field(ge=0)
    command: str


class HeadManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["spic-head"] = "spic-head"
    format_version: Literal[1] = 1
    head_id: str = Field(default="", pattern=r"^([0-9a-f]{16})?$")
    name: str = Field(pattern=HEAD_NAME)
    codec_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    architecture: str
    classes: list[ClassInfo]
    files: dict[str, BundleFile]
    reject: RejectRule | None = None
    measured: HeadMeasured | None = None

    def content_hash(self) -> str:
        return artifact_id(self, "head_id")


def write_head(folder: Path, manifest: HeadManifest) -> HeadManifest:
    """Hash the head's files, set its id and write head.json."""
    return write_artifact(folder, manifest, "head_id", HEAD_MANIFEST)


def load_head_manifest(folder: Path) -> HeadManifest:
    """Read and verify a head folder: every file against its hash, the id against the content."""
    return load_artifact(folder, HeadManifest, "head_id", HEAD_MANIFEST, "head")


@dataclass
class HeadAnswers:
    """A head's answers for N frames."""

    probs: np.ndarray  # (N, K)
    unknown: np.ndarray  # (N,) bool: below the reject rule's threshold
    score: np.ndarray | None  # (N,) the reject rule's score; None without a rule


class Head:
    """A head opened for serving: its graph, classes and reject rule."""

    def __init__(
        self,
        name: str,
        head_id: str,
        codec_id: str,
        classes: list[ClassInfo],
        graph: Path,
        reject: RejectRule | None,
        bank: Path | None,
        threads: int = 1,
        arena: bool = True,
        source: Path | None = None,
        detector: Path | None = None,
    ):
        self.name, self.head_id, self.codec_id = name, head_id, codec_id
        self.classes = classes
        self.labels = [c.name for c in classes]
        self.reject = reject
        self.source = source
        self.session = make_session(graph, threads=threads, cache_dir=False, arena=arena)
        outputs = [o.name for o in self.session.get_outputs()]
        self.has_features = "features" in outputs
        self.outputs = ["logits"] + (["features"] if self.has_features else [])
        self.bank = load_bank(bank) if bank is not None else None
        self.detector: OEDetector | None = load_detector(detector) if detector else None
        if reject is not None and reject.score in ("knn", "oe") and self.bank is None:
            raise ValueError(f"head {name}: a {reject.score} reject rule needs its bank")
        oe = reject is not None and reject.score == "oe"
        if oe and (self.detector is None or not self.has_features):
            raise ValueError(f"head {name}: an oe reject rule needs its detector and features")
        if self.bank is not None and reject is not None and reject.score in ("knn", "oe"):
            self._check_bank_width()

    def _check_bank_width(self) -> None:
        assert self.bank is not None
        # The bank's width is the features' (graph features + 2 x latent channels), which the
        # first frame would reveal; a mismatch is a broken head, refused at load.
        n_in = self.session.get_inputs()[0].shape[1]
        feats = self.session.get_outputs()[1].shape[1] if self.has_features else 0
        known = isinstance(n_in, int) and isinstance(feats, int)
        if known and self.bank.shape[1] != feats + 2 * n_in:
            raise ValueError(
                f"head {self.name}: bank of {self.bank.shape[1]} features, "
                f"the head makes {feats + 2 * n_in}"
            )

    @classmethod
    def open(cls, folder: str | Path, threads: int = 1, arena: bool = True) -> Head:
        folder = Path(folder)
        m = load_head_manifest(folder)
        bank = folder / m.files["bank"].path if "bank" in m.files else None
        detector = folder / m.files["detector"].path if "detector" in m.files else None
        return cls(
            m.name,
            m.head_id,
            m.codec_id,
            m.classes,
            folder / m.files["graph"].path,
            m.reject,
            bank,
            threads,
            arena,
            source=folder,
            detector=detector,
        )

    @classmethod
    def embedded(
        cls, bundle: Path, manifest: Manifest, threads: int = 1, arena: bool = True
    ) -> Head:
        """A bundle's own classifier as a head named in its manifest (``bundle`` without one)."""
        info = manifest.head
        name = info.name if info is not None else "bundle"
        reject = info.reject if info is not None else None
        body = {
            "name": name,
            "classes": [c.model_dump() for c in manifest.classes],
            "graph": manifest.files["classifier"].sha256,
            "reject": reject.model_dump(mode="json", exclude={"measured"}) if reject else None,
            "bank": manifest.files[reject.bank].sha256 if reject and reject.bank else None,
        }
        if reject and reject.detector:  # absent otherwise: ids of heads without one unchanged
            body["detector"] = manifest.files[reject.detector].sha256
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        bank = bundle / manifest.files[reject.bank].path if reject and reject.bank else None
        det = reject.detector if reject else None
        detector = bundle / manifest.files[det].path if det else None
        return cls(
            name,
            hashlib.sha256(canonical).hexdigest()[:16],
            manifest.model_id,
            manifest.classes,
            bundle / manifest.files["classifier"].path,
            reject,
            bank,
            threads,
            arena,
            detector=detector,
        )

    def run(self, latents: np.ndarray) -> HeadAnswers:
        """(N, C, h, w) base latents -> probabilities, and which frames are unknown."""
        x = latents.astype(np.float32, copy=False)
        out = self.session.run(self.outputs, {"latent": x})
        logits = out[0]
        if self.reject is None:
            return HeadAnswers(softmax(logits), np.zeros(len(x), dtype=bool), None)
        feats = None
        if self.reject.score in ("knn", "oe"):
            feats = familiar_features(x, out[1] if self.has_features else None)
        if self.reject.score == "oe":
            assert feats is not None and self.bank is not None and self.detector is not None
            s = oe_score(feats, out[1], logits, self.bank, self.reject.k, self.detector)
        else:
            s = scores(self.reject, logits, feats, self.bank)
        return HeadAnswers(softmax(logits), s < self.reject.threshold, s)

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/models`` says of the head."""
        r = self.reject
        return {
            "name": self.name,
            "head_id": self.head_id,
            "codec_id": self.codec_id,
            "classes": [{"class_id": c.index, "id": c.id, "label": c.name} for c in self.classes],
            "reject": None
            if r is None
            else {"score": r.score, "threshold": r.threshold, "accept": r.accept},
        }
