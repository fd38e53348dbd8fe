"""Scoring the reference classifier on clean and codec-decoded images, and the codec qualities
that match SPIC's rate, which spic-train-reference fine-tunes and validates at."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from models import baselines
from models.reference import ResNet
from models.trainer import to_tensor
from shared.codebook import Codebook
from shared.manifest import load_manifest
from shared.preprocess import batch_input


@torch.no_grad()
def top1(model: ResNet, images: np.ndarray, labels: np.ndarray, device, batch: int = 100) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(images), batch):
        logits = model(to_tensor(images[i : i + batch], device))
        correct += (logits.argmax(1).cpu().numpy() == labels[i : i + batch]).sum()
    model.train()
    return float(correct / max(1, len(images)))


def decode_all(codec: str, quality: int, crops: np.ndarray, threads: int = 2) -> np.ndarray:
    """Every crop through ``codec`` at ``quality`` and back, as one uint8 array."""

    def run(c: np.ndarray) -> np.ndarray:
        return baselines.round_trip(codec, c, quality)[1]

    with ThreadPoolExecutor(threads) as pool:
        return np.stack(list(pool.map(run, crops)))


def match_to_spic(
    spic_bundle: Path, crops: np.ndarray, codecs
) -> tuple[float, dict[str, int], str]:
    """SPIC's mean bpp on ``crops`` at the bundle's default QF (real frames: the bundle's
    encoder.onnx, and its enhancement layer's graph when that QF sends it, quantized and
    rANS-coded by ``shared``), and each codec's matched quality."""

    manifest = load_manifest(spic_bundle)
    codebook, qf = Codebook(manifest), manifest.default_qf
    roles = ["encoder"]
    if manifest.enhancement is not None and manifest.enhancement.on(qf):
        roles.append(manifest.enhancement.encoder)
    sessions = [
        ort.InferenceSession(
            str(Path(spic_bundle) / manifest.files[r].path), providers=["CPUExecutionProvider"]
        )
        for r in roles
    ]
    bits = []
    for c in crops:
        x = batch_input([c])
        y = np.concatenate([s.run(None, {"image": x})[0][0] for s in sessions])
        symbols = manifest.quantize_latent(y, qf)
        frame = codebook.encode(symbols, qf, "rans", (c.shape[1], c.shape[0]))
        bits.append(8 * len(frame))
    target = float(np.mean(bits)) / (crops.shape[1] * crops.shape[2])
    qualities = {c: baselines.match_quality(c, list(crops), target) for c in codecs}
    return target, qualities, f"bundle {manifest.model_id} at QF{qf}"
