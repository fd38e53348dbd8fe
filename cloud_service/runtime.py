"""The cloud's model runtime: frames -> latents -> class probabilities, or -> reconstructions.

Classification runs ``classifier.onnx`` on the dequantized latent; no pixel is decoded for it.
``decoder.onnx`` runs only when a reconstruction is asked for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from shared.codebook import Codebook
from shared.manifest import Manifest, load_manifest
from shared.quantize import dequantize


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class BundleRuntime:
    """One model bundle loaded for serving: its codebook and its classifier/decoder sessions."""

    def __init__(self, bundle_path: str | Path, threads: int = 1):
        self.path = Path(bundle_path)
        self.manifest: Manifest = load_manifest(self.path)
        self.codebook = Codebook(self.manifest)
        self.classifier = _session(self.path / self.manifest.files["classifier"].path, threads)
        self.decoder = _session(self.path / self.manifest.files["decoder"].path, threads)
        self.labels = [c.name for c in self.manifest.classes]

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    def latents(self, symbols: list[np.ndarray], qfs: list[int]) -> np.ndarray:
        return np.stack([dequantize(s, q) for s, q in zip(symbols, qfs, strict=True)])

    def classify_latents(self, y_hat: np.ndarray) -> np.ndarray:
        """(N, C, h, w) latents -> (N, classes) probabilities."""
        return softmax(self.classifier.run(None, {"latent": y_hat.astype(np.float32)})[0])

    def reconstruct_latents(self, y_hat: np.ndarray) -> np.ndarray:
        """(N, C, h, w) latents -> (N, H, W, 3) uint8 images."""
        x = self.decoder.run(None, {"latent": y_hat.astype(np.float32)})[0]
        return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)
