"""A transform-coded enhancement layer for reconstruction at the top of the rate ladder.

SPIC's latent serves the classifier: at QF 255 the shipped model still reconstructs at about
21 dB, because its channels carry what the classifier needs, not the pixels (issue 11; "What caps
reconstruction" in ``docs/research/training-log.md``). This layer adds channels that only a decoder
reads, from a QF up (``shared.manifest.Enhancement``):

    camera:  x ─── g_a ────────────────────────────► base latent (C channels)  ─┐ every QF
              └─── conv B×B, stride B (the KLT), clip ► layer (M channels) ──────┴ QF ≥ from_qf
    cloud:   base latent ─ h_c ─► logits                        every QF
             base latent ─ g_s ─► x̂                             QF < from_qf
             layer ─ transposed conv B×B, stride B ─► x̂         QF ≥ from_qf

Each is its own graph in the bundle (``enhancement_encoder.onnx``, ``enhanced_decoder.onnx``), so
below ``from_qf`` the camera and the cloud run and code exactly what they would without the layer.

The transform is the Karhunen-Loève transform (principal components) of B×B×3 pixel blocks,
B the latent's stride, fitted on training crops: the optimum of a linear autoencoder, in closed
form, so the layer needs no training run. Its first M components are kept. One scale maps every
coefficient into the latent's [0, 1] (centred on ``OFF``), so a QF gives every
coefficient the same quantization step, which is what minimises the squared error of an
orthonormal transform at a given rate; components much smaller than the step then quantize to
the middle symbol and cost almost nothing. On 300 val crops (``scripts/reconstruction_probe.py
klt``) 64 components give 26.4 dB at QF 64 and 27.8 dB at QF 128 from this layer alone.

The camera's cost is one convolution: M·3·B² multiply-accumulates per latent position, 9.6 M
at M = 64 for a 224² frame.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def blocks(images: np.ndarray, block: int) -> np.ndarray:
    """uint8 (N, H, W, 3) images -> float64 (N·H/B·W/B, 3·B·B) blocks in [0, 1], each flattened
    channel-major (c, dy, dx), the order of a convolution weight's (3, B, B)."""
    n, h, w, _ = images.shape
    b = images.reshape(n, h // block, block, w // block, block, 3)
    return b.transpose(0, 1, 3, 5, 2, 4).reshape(-1, 3 * block * block).astype(np.float64) / 255


def fit_klt(
    images: np.ndarray, channels: int, block: int, coverage: float = 99.99
) -> tuple[np.ndarray, np.ndarray, float]:
    """The first ``channels`` principal components of ``images``' blocks, (M, 3, B, B); the mean
    block, (3, B, B); and the half range R that maps a coefficient c to 0.5 + c / 2R: the
    ``coverage`` percentile of |c| over the kept components, so clipping is rare."""
    b = blocks(images, block)
    if channels > b.shape[1]:
        raise ValueError(f"{channels} components asked of {b.shape[1]}-value blocks")
    mean = b.mean(0)
    _, _, vt = np.linalg.svd(b - mean, full_matrices=False)
    basis = vt[:channels]
    # The sign of a singular vector is arbitrary: fix it so a refit gives the same weights.
    basis *= np.where(basis[np.arange(channels), np.abs(basis).argmax(1)] < 0, -1.0, 1.0)[:, None]
    half_range = float(np.percentile(np.abs((b - mean) @ basis.T), coverage))
    shape = (3, block, block)
    return basis.reshape(channels, *shape), mean.reshape(shape), half_range


# Where a zero coefficient sits in the latent's [0, 1]: the middle, so coefficients of either sign
# get the same number of steps.
OFF = 0.5


class KLTEnhancement(nn.Module):
    """``encode``: pixels (N, 3, H, W) in [0, 1] -> enhancement latent (N, M, H/B, W/B) in [0, 1];
    ``decode``: that latent -> pixels. Both linear (the encoder then clipped), weights fixed."""

    def __init__(self, basis: np.ndarray, mean: np.ndarray, half_range: float):
        super().__init__()
        m, _, block, _ = basis.shape
        w = torch.from_numpy(basis).float()
        mu = torch.from_numpy(mean).float()
        scale = 2 * half_range
        self.analysis = nn.Conv2d(3, m, block, block)
        self.analysis.weight.data = w / scale
        self.analysis.bias = nn.Parameter(OFF - (w * mu).sum((1, 2, 3)) / scale)
        # A constant channel of ones carries the mean block, which varies inside the block and so
        # cannot be a transposed convolution's per-channel bias.
        self.synthesis = nn.ConvTranspose2d(m + 1, 3, block, block, bias=False)
        self.synthesis.weight.data = torch.cat([w * scale, mu[None]])
        self.requires_grad_(False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.analysis(x).clamp(0.0, 1.0)

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        ones = torch.ones_like(y[:, :1])
        return self.synthesis(torch.cat([y - OFF, ones], 1))  # type: ignore[no-any-return]


class EnhancementEncoder(nn.Module):
    """The camera's graph of the layer: pixels -> the layer's channels (``enhancement_encoder``)."""

    def __init__(self, layer: KLTEnhancement):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer.encode(x)


class EnhancementDecoder(nn.Module):
    """The cloud's graph of the layer: its channels -> pixels (``enhanced_decoder``)."""

    def __init__(self, layer: KLTEnhancement):
        super().__init__()
        self.layer = layer

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.layer.decode(y).clamp(0.0, 1.0)
