"""A stronger base-latent decoder for the frozen codec, and the losses it is trained with.

The shipped decoder (models/network.py ``Decoder``: four 4x4 transposed convolutions, 128-64-32
channels) was trained jointly with the rate and the classifier. ``LatentDecoder`` keeps that path,
initialised from the bundle's decoder.onnx, and adds a second path that reasons at the latent's
own 14² resolution, where a 3x3 conv costs 1/256 of the same conv at 224²:

    latent ─┬─ ConvT 32→128 (x2) ──────────────────────────────┐
            └─ conv 3x3 32→W, ``blocks`` residual blocks, conv  +─ LReLU, ConvT 128→64, LReLU,
               3x3 W→4·128, PixelShuffle(2) (zero-initialised) ┘  ConvT 64→32, LReLU, ConvT
                                                                   32→3, sigmoid
Why each choice:

* warm start: the new path's last conv is zero, so before any step the network *is* today's
  decoder (18.3 dB at QF 4); training on a 2-core CPU (tens of minutes) only has to add. From
  scratch, the same budget leaves a deeper net below the shipped decoder.
* the added path at 14²: the latent is 32 values on QF + 1 levels per position; what a picture
  looks like there is inferred from its neighbours (3x3 convs, ``blocks`` = 4 residual blocks:
  a 9x9-latent receptive field, 144² pixels, most of the 224² crop) at ~1.8 M MACs per latent
  position, about what the whole shipped decoder costs.
* ``width`` 128: the shipped path's own width after its first layer, so the two paths add.
* residual blocks without BatchNorm (as EDSR, Lim et al. 2017): a decoder's output must not
  depend on batch statistics; each block starts as the identity (zero last conv).
* sub-pixel upsampling (PixelShuffle, Shi et al. 2016) onto the shipped path's 28² features: no
  transposed-convolution checkerboard in the new path.

The QF is not an input: the latent's values are multiples of 1/QF, so the decoder sees the band,
and the graph keeps the shipped decoder's one input (``latent``) and any latent size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SLOPE = 0.1  # the shipped decoder's LeakyReLU slope (architecture_config.leaky_slope)


@dataclass
class DecoderConfig:
    latent_channels: int = 32
    dec_channels: list[int] = field(default_factory=lambda: [128, 64, 32])  # the shipped path
    width: int = 128
    blocks: int = 4


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)  # type: ignore[arg-type]  # a conv made with bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x), SLOPE))


class LatentDecoder(nn.Module):
    """latent (N, C, h, w) in [0, 1] -> image (N, 3, 16h, 16w) in [0, 1]."""

    def __init__(self, cfg: DecoderConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or DecoderConfig()
        d = cfg.dec_channels
        # Named as models/network.py's Decoder (net.0, net.2, ...), so its weights load by name.
        chans = [cfg.latent_channels, *d, 3]
        self.net = nn.ModuleDict(
            {
                str(2 * i): nn.ConvTranspose2d(a, b, 4, 2, 1)
                for i, (a, b) in enumerate(zip(chans, chans[1:], strict=False))
            }
        )
        out = nn.Conv2d(cfg.width, 4 * d[0], 3, 1, 1)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)  # type: ignore[arg-type]  # a conv made with bias
        self.context = nn.Sequential(
            nn.Conv2d(cfg.latent_channels, cfg.width, 3, 1, 1),
            *[ResBlock(cfg.width) for _ in range(cfg.blocks)],
            out,
            nn.PixelShuffle(2),
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        # The context path sees a centred latent: zero-mean inputs suit a default initialisation.
        h = self.net["0"](latent) + self.context(latent * 2 - 1)
        for k in list(self.net)[1:]:
            h = self.net[k](F.leaky_relu(h, SLOPE))
        return torch.sigmoid(h)


def load_shipped(model: LatentDecoder, onnx_path: Path) -> None:
    """Copy a bundle's decoder.onnx weights (initializers net.0.weight ... net.6.bias) into the
    shipped path; ValueError when the graph is not that architecture."""
    import onnx
    from onnx import numpy_helper

    weights = {
        i.name: numpy_helper.to_array(i) for i in onnx.load(str(onnx_path)).graph.initializer
    }
    state = {k: torch.from_numpy(v.copy()) for k, v in weights.items() if k.startswith("net.")}
    own = {k: v for k, v in model.state_dict().items() if k.startswith("net.")}
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        raise ValueError(f"{onnx_path} is not the shipped 4-layer decoder this warm start expects")
    model.load_state_dict(state, strict=False)


def _gauss(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of images in [0, 1] (N, 3, H, W): Wang et al.'s 11x11 Gaussian window, σ 1.5,
    per channel, over the valid region."""
    c = x.shape[1]
    k = _gauss().to(x).expand(c, 1, -1, -1)
    c1, c2 = 0.01**2, 0.03**2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, k, groups=c)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean()


# MSE at ~18 dB is ~0.016 and 1 - SSIM ~0.55: a weight of 0.05 makes the SSIM term about as
# large as the MSE term, so neither swamps the other at the start.
SSIM_WEIGHT = 0.05
LOSSES = ("mse", "mse+perceptual")


def decoder_loss(x_hat: torch.Tensor, x: torch.Tensor, loss: str) -> torch.Tensor:
    mse = F.mse_loss(x_hat, x)
    if loss == "mse":
        return mse
    if loss == "mse+perceptual":
        return mse + SSIM_WEIGHT * (1 - ssim(x_hat, x))
    raise ValueError(f"unknown loss {loss!r}")
