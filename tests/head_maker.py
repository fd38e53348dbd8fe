"""Tiny classifier heads for tests: latent (N, C, h, w) -> mean per channel -> linear -> logits,
written as a head folder (``shared.heads.write_head``) for the codec of a bundle."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shared.heads import HEAD_MANIFEST, HeadManifest, write_head
from shared.manifest import BundleFile, ClassInfo, load_manifest
from shared.reject import RejectRule


def make_head(
    folder: Path,
    bundle: Path,
    name: str,
    labels: tuple[str, ...] = ("cat", "dog", "bird"),
    threshold: float | None = None,
    seed: int = 0,
    codec_id: str | None = None,
) -> HeadManifest:
    """A head named ``name`` for ``bundle``'s codec in ``folder``; with ``threshold`` a
    max-softmax reject rule (above 1: every frame unknown; 0: none)."""
    manifest = load_manifest(bundle)
    channels = manifest.latent.channels
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(
        rng.normal(size=(len(labels), channels)).astype(np.float32), "weight"
    )
    bias = numpy_helper.from_array(np.zeros(len(labels), np.float32), "bias")
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["latent"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "weight", "bias"], ["logits"], transB=1),
        ],
        "head",
        [helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["N", channels, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(labels)])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "head.onnx")
    reject = None if threshold is None else RejectRule(score="max_softmax", threshold=threshold)
    return write_head(
        folder,
        HeadManifest(
            name=name,
            codec_id=codec_id or manifest.model_id,
            architecture="test-gap-linear",
            classes=[ClassInfo(index=i, id=f"c{i}", name=n) for i, n in enumerate(labels)],
            files={"graph": BundleFile(path="head.onnx", sha256="")},
            reject=reject,
        ),
    )


def head_zip(folder: Path, extra: dict[str, bytes] | None = None) -> bytes:
    """The zip ``PUT /v1/heads/{name}`` takes: head.json and the files it lists."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(folder / HEAD_MANIFEST, HEAD_MANIFEST)
        z.write(folder / "head.onnx", "head.onnx")
        for member, data in (extra or {}).items():
            z.writestr(member, data)
    return buf.getvalue()
