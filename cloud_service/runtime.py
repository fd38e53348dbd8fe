"""The cloud's model runtime: frames -> latents -> class probabilities, or -> reconstructions.

Classification runs ``classifier.onnx`` on the dequantized latent; no pixel is decoded for it.
A decoder runs only when a reconstruction is asked for: ``decoder.onnx``, or for a frame made at a
QF that sends a bundle's enhancement layer, that layer's decoder (``shared.manifest.Enhancement``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from shared.codebook import Codebook
from shared.manifest import Manifest, ServingLimits, load_manifest
from shared.preprocess import to_uint8_image


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # ONNX Runtime's arena keeps the peak of every request for the life of the process: after a
    # few 1 MiPx reconstructions an idle server held gigabytes. Without it, memory goes back to
    # the allocator after each run (and to the OS with shared.tuning.release_memory).
    opts.enable_cpu_mem_arena = False
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    probs: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return probs


def serving_limits(bundle: ServingLimits | None, cap: ServingLimits | None) -> ServingLimits:
    """The tighter of a bundle's own limits and the service's: a manifest may only lower them."""
    if bundle is None or cap is None:
        return bundle or cap or ServingLimits()
    return ServingLimits(
        max_input_pixels=min(bundle.max_input_pixels, cap.max_input_pixels),
        max_input_side=min(bundle.max_input_side, cap.max_input_side),
    )


class BundleRuntime:
    """One model bundle loaded for serving: its codebook and its classifier/decoder sessions."""

    def __init__(self, bundle_path: str | Path, threads: int = 1, cap: ServingLimits | None = None):
        self.path = Path(bundle_path)
        self.manifest: Manifest = load_manifest(self.path)
        self.codebook = Codebook(self.manifest)
        self.limits = serving_limits(self.manifest.limits, cap)
        self.classifier = _session(self.path / self.manifest.files["classifier"].path, threads)
        roles = {self.manifest.decoder_role(q) for q in self.manifest.qfs}
        self.decoders = {
            r: _session(self.path / self.manifest.files[r].path, threads) for r in roles
        }
        self.labels = [c.name for c in self.manifest.classes]

    @property
    def native_shape(self) -> tuple[int, int, int]:
        return self.codebook.native_shape

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    def latents(self, symbols: list[np.ndarray], qfs: list[int]) -> np.ndarray:
        """Dequantize several frames' symbols into one (N, C, h, w) batch."""
        m = self.manifest
        return np.stack([m.dequantize_latent(s, q) for s, q in zip(symbols, qfs, strict=True)])

    def classify_latents(self, y_hat: np.ndarray) -> np.ndarray:
        """(N, C, h, w) latents -> (N, classes) probabilities, from the base channels only."""
        base = y_hat[:, : self.manifest.latent.channels].astype(np.float32)
        return softmax(self.classifier.run(None, {"latent": base})[0])

    def reconstruct_latents(self, y_hat: np.ndarray, qf: int) -> np.ndarray:
        """(N, C, h, w) latents of frames made at ``qf`` -> (N, H, W, 3) uint8 images."""
        role, base = self.manifest.decoder_role(qf), self.manifest.latent.channels
        # The base decoder reads the base channels; an enhancement layer's, the layer's own.
        y = y_hat[:, :base] if role == "decoder" else y_hat[:, base:]
        x = self.decoders[role].run(None, {"latent": y.astype(np.float32)})[0]
        images: np.ndarray = to_uint8_image(x)
        return images
