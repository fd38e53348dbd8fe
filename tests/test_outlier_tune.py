"""Outlier exposure on a bundle's own head (``models.outlier_tune``): the head learns to answer
photos of other things with flat scores; the codec, the frozen layers and the ``features`` output
(what the knn bank reads) do not move."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from models.onnx_trunk import OnnxTrunk
from models.outlier_tune import Frozen, _split_tensor, main
from shared.manifest import load_manifest
from shared.runtime import SpicCodec


@pytest.fixture()
def bundle(tiny_bundle, tmp_path) -> tuple[Path, str]:
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    # the exporter gives the head a features output; what it pools stays frozen
    return out, _split_tensor(onnx.load(str(out / "classifier.onnx")).graph)


def _latents(bundle: Path, n: int = 6) -> np.ndarray:
    m = load_manifest(bundle)
    h = w = 64 // m.latent.stride
    rng = np.random.default_rng(1)
    symbols = rng.integers(0, m.default_qf + 1, (n, m.latent.channels, h, w))
    return np.stack([m.dequantize_latent(s, m.default_qf) for s in symbols]).astype(np.float32)


def _run(bundle: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = ort.InferenceSession(str(bundle / "classifier.onnx"), providers=["CPUExecutionProvider"])
    logits, features = s.run(["logits", "features"], {s.get_inputs()[0].name: x})
    return logits, features


def test_trunk_from_an_activation_replays_the_logits(bundle):
    path, split = bundle
    x = _latents(path)
    logits, _ = _run(path, x)
    trunk = OnnxTrunk(path / "classifier.onnx", start=split)
    act = Frozen(path / "classifier.onnx", split)(x)[1].astype(np.float32)
    with torch.no_grad():
        replayed = trunk.last(trunk(torch.from_numpy(act))).numpy()
    # float16 storage of the activation: close, not bit-equal
    assert np.abs(replayed - logits).max() < 1e-2 * max(1.0, np.abs(logits).max())


def test_outlier_exposure_flattens_outliers_and_keeps_codec_and_features(
    bundle, tiny_data, tmp_path, capsys
):
    path, _ = bundle
    outliers = tmp_path / "outliers"
    outliers.mkdir()
    rng = np.random.default_rng(3)
    for i in range(12):  # photos of nothing the head knows: noise and flat greys
        img = rng.integers(0, 255, (80, 96, 3)) if i % 2 else np.full((80, 96, 3), 20 * i)
        Image.fromarray(img.astype(np.uint8)).save(outliers / f"o{i}.png")
    before_id = load_manifest(path).model_id
    x = _latents(path)
    logits_before, features_before = _run(path, x)
    main(
        [
            "--bundle", str(path), "--data", str(tiny_data), "--outliers", str(outliers),
            "--epochs", "4", "--batch", "8", "--lr", "3e-3", "--no-progress",
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    moved = json.loads(printed.splitlines()[0])
    after = load_manifest(path)  # the seal is checked: the new classifier is the sealed one
    assert after.model_id == before_id
    assert moved["outlier_max_softmax_after"] < moved["outlier_max_softmax_before"]
    logits_after, features_after = _run(path, x)
    assert np.array_equal(features_after, features_before)  # the frozen layers did not move
    assert not np.allclose(logits_after, logits_before)
    assert after.head is None or after.head.reject is None  # no threshold of the old scores
    card = (path / "MODEL_CARD.md").read_text()
    # before the results: spic-card rewrites a card from "## Results" on
    assert "## Outlier exposure" in card
    assert "## Results" not in card or card.index("## Outlier exposure") < card.index("## Results")
    codec = SpicCodec(path)
    assert codec.classify(x, [codec.default_head])[codec.default_head].probs.shape[0] == len(x)
