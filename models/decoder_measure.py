"""How a base-latent decoder is measured: PSNR and SSIM of its uint8 pictures per QF, on the
cached val crops, as ``spic-card`` measures the bundle's own decoder (evaluation/spic_eval.py:
PSNR over uint8 pixels, SSIM by scikit-image with its default 7x7 window, data range 255)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from models.data import seeded_subset
from models.decoder_cache import LatentCache
from shared.onnx_session import make_session
from shared.preprocess import to_uint8_image


def quantized(y: torch.Tensor, qf: int) -> torch.Tensor:
    """shared.quantize's rule in torch: dequantize(quantize(y, qf))."""
    return torch.clamp(torch.floor(y * qf + 0.5), 0, qf) / qf


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(float(mse), 1e-10)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity  # the eval extra

    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def val_indices(n: int, limit: int) -> np.ndarray:
    """The seeded val subset every decoder measurement uses (``models.data.seeded_subset``)."""
    return seeded_subset(n, limit) if limit < n else np.arange(n)


def graph_decoder(graph: Path, threads: int = 2) -> Callable[[np.ndarray], np.ndarray]:
    """An ONNX decoder graph as latents (N, C, h, w) -> uint8 pictures (N, H, W, 3)."""
    session = make_session(graph, threads=threads, cache_dir=False)

    def run(y: np.ndarray) -> np.ndarray:
        out: np.ndarray = to_uint8_image(session.run(None, {"latent": y.astype(np.float32)})[0])
        return out

    return run


def measure(
    decode: Callable[[np.ndarray], np.ndarray],
    cache: LatentCache,
    qfs: list[int],
    limit: int,
    batch: int = 25,
) -> dict[str, dict[str, float]]:
    """Mean PSNR and SSIM per QF (a string key) of ``decode`` on ``limit`` seeded val images."""
    keep = val_indices(len(cache), limit)
    out: dict[str, dict[str, float]] = {}
    for qf in qfs:
        ps, ss = [], []
        for start in range(0, len(keep), batch):
            idx = keep[start : start + batch]
            y = quantized(torch.from_numpy(np.asarray(cache.y[idx])), qf).numpy()
            for pic, ref in zip(decode(y), cache.images[idx], strict=True):
                ps.append(psnr(pic, ref))
                ss.append(ssim(pic, ref))
        out[str(qf)] = {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss))}
        print(
            f"QF {qf}: PSNR {out[str(qf)]['psnr']:.2f} SSIM {out[str(qf)]['ssim']:.3f}", flush=True
        )
    return out
