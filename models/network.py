"""The SPIC network (Patwa et al., ICIP 2020), in PyTorch, for training and ONNX export only.

    x ──g_a──► y ∈ [0,1]^(C×h×w) ──Q(QF)──► ŷ ──g_s──► x̂          (reconstruction, on demand)
                                            └──h_c──► class logits  (classification on the latent)

* ``g_a``: strided convolutions with leaky ReLU ending in a sigmoid, so the latent is bounded and
  one quantization rule (``shared.quantize``) serves every QF.
* ``Q``: ``floor(y·QF + ½)/QF``, true rounding forward, identity backward.
* ``g_s``: transposed convolutions back to pixels.
* ``h_c``: a small residual network that reads ŷ directly; no pixel decode on the cloud.
* ``entropy_model``: a per-channel factorized density for the rate term (see ``entropy_model``).

Names follow the paper and CompressAI. ``forward()`` is for training; real bytes go through the
exported ONNX graphs plus ``shared`` (entropy coding never enters a graph).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from models import split_resnet
from models.blocks import BasicBlock
from models.entropy_model import FactorizedDensity
from models.registry import register_model

# ImageNet statistics: the encoder normalises inside its graph, so the edge feeds plain [0,1] RGB.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def quantize(y: torch.Tensor, qf: int | None, mode: str = "ste") -> torch.Tensor:
    """The torch mirror of ``shared.quantize`` with explicit modes.

    * ``"ste"``: true rounding in the forward pass, identity in the backward pass (the paper's).
    * ``"symbols"``: integer symbols in [0, QF] (int64), exactly ``shared.quantize.quantize``.
    * ``"noise"``: y plus uniform noise of one step, U(-½, ½)/QF, clipped to [0, 1]: the
      training proxy of learned compression (CompressAI's "noise"). Its gradient reaches detail
      finer than a step, which rounding's identity gradient rewards no more than noise.
    * ``"none"``: the latent unquantized (the paper's "uncompressed" column); ``qf`` is ignored.
    """
    if mode == "none" or qf is None:
        return y
    if mode == "noise":
        return torch.clamp(y + (torch.rand_like(y) - 0.5) / qf, 0.0, 1.0)
    symbols = torch.clamp(torch.floor(y * qf + 0.5), 0, qf)
    if mode == "symbols":
        return symbols.to(torch.int64)
    if mode == "ste":
        return y + (symbols / qf - y).detach()
    raise ValueError(f"unknown quantize mode {mode!r}")


@dataclass
class SPICConfig:
    """Architecture hyper-parameters; saved in every checkpoint and in the bundle manifest."""

    # g_a: one stride-2 conv per entry, then one stride-2 conv to the latent. 5x5 early layers see
    # enough context at full resolution; 3x3 later keeps the encoder under 0.6 GFLOP at 224².
    enc_channels: tuple[int, ...] = (32, 64, 128)
    enc_kernels: tuple[int, ...] = (5, 5, 3)
    # 32 channels at stride 16 is 6272 symbols at 224²: 0.1 bpp is then 0.8 bit/symbol, which a
    # static per-channel table can reach; stride 8 would need 0.2 bit/symbol.
    latent_channels: int = 32
    latent_kernel: int = 3
    dec_channels: tuple[int, ...] = (128, 64, 32)
    # h_c runs in the cloud, so it may be wider than the encoder: two stages of residual blocks.
    cls_widths: tuple[int, ...] = (128, 256)
    cls_blocks: int = 2
    num_classes: int = 10
    # Eight logistics per channel fit the saturated, multi-modal latent histograms far better than
    # one (a single logistic overestimated the rate 2-2.5x in calibration runs on this machine).
    density_mixtures: int = 8
    leaky_slope: float = 0.1
    mean: tuple[float, ...] = field(default=IMAGENET_MEAN)
    std: tuple[float, ...] = field(default=IMAGENET_STD)
    # "conv": g_a and h_c as above (the paper's layout, v1). "resnet": a reference ResNet split
    # between camera and cloud with the latent in the cut (models/split_resnet.py); the enc_* and
    # cls_* fields are then unused and the resnet_* fields must match the reference bundle that
    # initialises it.
    backbone: str = "conv"
    resnet_stem: int = 32
    resnet_widths: tuple[int, ...] = (32, 64, 128, 256)
    resnet_blocks: tuple[int, ...] = (2, 2, 2, 2)
    resnet_split: int = 2  # stages that run on the camera
    latent_stride: int = 1  # the resnet latent conv's stride (1 or 2)

    def __post_init__(self) -> None:
        if self.backbone not in ("conv", "resnet"):
            raise ValueError(f"unknown backbone {self.backbone!r}: conv or resnet")
        if 2 ** (len(self.dec_channels) + 1) != self.stride:
            raise ValueError(
                f"g_s upsamples by {2 ** (len(self.dec_channels) + 1)}, the latent's stride is "
                f"{self.stride}: dec_channels needs log2(stride) - 1 entries"
            )

    @property
    def stride(self) -> int:
        if self.backbone == "resnet":
            return 4 * 2 ** (self.resnet_split - 1) * self.latent_stride
        return 2 ** (len(self.enc_channels) + 1)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SPICConfig:
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kwargs)


class Encoder(nn.Module):
    """g_a: [0,1] RGB (N,3,H,W) -> bounded latent y (N,C,H/s,W/s)."""

    def __init__(self, cfg: SPICConfig):
        super().__init__()
        self.mean: torch.Tensor  # buffers, declared for the type checker
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1))
        layers: list[nn.Module] = []
        if cfg.backbone == "resnet":
            layers = split_resnet.camera_layers(cfg)
        else:
            cin = 3
            for cout, k in zip(cfg.enc_channels, cfg.enc_kernels, strict=True):
                layers += [nn.Conv2d(cin, cout, k, 2, k // 2), nn.LeakyReLU(cfg.leaky_slope)]
                cin = cout
            k = cfg.latent_kernel
            layers += [nn.Conv2d(cin, cfg.latent_channels, k, 2, k // 2), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The latent before its sigmoid (training penalises saturation on it)."""
        body = self.net[:-1]
        return body((x - self.mean) / self.std)  # type: ignore[no-any-return]

    @torch.no_grad()
    def pin_channels(self, channels: torch.Tensor, values: torch.Tensor) -> None:
        """Make latent ``channels`` constant, ``y_c = values``, for every image.

        Their weights in the last convolution become zero and its bias the value's logit. A
        channel the rate term left idle still jitters by a few thousandths, and at a fine QF that
        jitter crosses rounding boundaries (0.5·255 is one) and costs bits for nothing; a
        constant is one symbol, which the tables then make free."""
        last = self.net[-2]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        last.weight[channels] = 0.0
        last.bias[channels] = torch.logit(values.clamp(1e-4, 1 - 1e-4))


class Decoder(nn.Module):
    """g_s: latent (N,C,h,w) -> reconstruction in [0,1] (N,3,h·s,w·s)."""

    def __init__(self, cfg: SPICConfig):
        super().__init__()
        layers: list[nn.Module] = []
        cin = cfg.latent_channels
        for cout in cfg.dec_channels:
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.LeakyReLU(cfg.leaky_slope)]
            cin = cout
        layers += [nn.ConvTranspose2d(cin, 3, 4, 2, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.net(y_hat)


class LatentClassifier(nn.Module):
    """h_c: quantized latent (N,C,h,w) -> logits (N,num_classes). Works at any h, w >= 1."""

    def __init__(self, cfg: SPICConfig):
        super().__init__()
        if cfg.backbone == "resnet":
            layers, cin = split_resnet.cloud_layers(cfg)
        else:
            w0 = cfg.cls_widths[0]
            layers = [
                nn.Conv2d(cfg.latent_channels, w0, 3, 1, 1, bias=False),
                nn.BatchNorm2d(w0),
                nn.ReLU(inplace=True),
            ]
            cin = w0
            for i, width in enumerate(cfg.cls_widths):
                for b in range(cfg.cls_blocks):
                    layers.append(BasicBlock(cin, width, stride=2 if (i > 0 and b == 0) else 1))
                    cin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(cin, cfg.num_classes)
        )

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(y_hat))


class SPIC(nn.Module):
    def __init__(self, cfg: SPICConfig | None = None):
        super().__init__()
        self.cfg = cfg or SPICConfig()
        self.g_a = Encoder(self.cfg)
        self.g_s = Decoder(self.cfg)
        self.h_c = LatentClassifier(self.cfg)
        self.entropy_model = FactorizedDensity(self.cfg.latent_channels, self.cfg.density_mixtures)

    def forward(
        self, x: torch.Tensor, qf: int | None, decode: bool = True, mode: str = "ste"
    ) -> dict:
        """Training pass. ``qf=None`` leaves the latent unquantized (and gives no likelihoods).

        ``mode`` quantizes the latent the rate term and the decoder see; the classifier always
        reads it rounded ("ste"), as it will in service."""
        z = self.g_a.logits(x)
        y = torch.sigmoid(z)
        y_hat = quantize(y, qf, "ste")
        y_train = y_hat if mode == "ste" else quantize(y, qf, mode)
        out = {"z": z, "y": y, "y_hat": y_hat, "logits": self.h_c(y_hat), "likelihoods": None}
        if qf is not None:
            out["likelihoods"] = self.entropy_model.likelihood(y_train, qf)
        if decode:
            out["x_hat"] = self.g_s(y_train)
        return out


def count_encoder_macs(model: SPIC, size: int = 224) -> int:
    """Multiply-accumulates of g_a for one ``size``² frame (FLOPs are conventionally 2x this)."""
    return count_conv_macs(model.g_a, size)


def count_conv_macs(module: nn.Module, size: int = 224) -> int:
    """Multiply-accumulates of ``module``'s convolutions for one RGB ``size``² input."""
    macs = 0

    def hook(mod: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal macs
        k = mod.kernel_size[0] * mod.kernel_size[1]
        macs += out.numel() * (mod.in_channels // mod.groups) * k

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        module(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return macs


@register_model(kind="spic")
def spic_s16(**overrides) -> SPIC:
    """The default: stride 16, 32 latent channels; about 0.51 GFLOP (2·MAC) at 224²."""
    return SPIC(SPICConfig(**overrides))


@register_model(kind="spic")
def spic_s16_c64(**overrides) -> SPIC:
    """The rate-ladder experiment (issue 11): spic-s16 with 64 latent channels and a wider decoder.

    It tested whether capacity capped reconstruction near 20 dB at every QF in the 32-channel
    probes. It did not (run 7 in docs/research/training-log.md): quality still stopped at QF 8-16, and
    the 35 channels the rate term left idle still cost bits at fine QFs. The extra channels cost
    the camera ~0.015 GFLOP; the wider decoder runs only in the cloud."""
    base = dict(latent_channels=64, dec_channels=(192, 96, 48))
    return SPIC(SPICConfig(**{**base, **overrides}))


@register_model(kind="spic")
def spic_rn18h(**overrides) -> SPIC:
    """The reference ResNet18-half cut after its second stage, 8 latent channels at stride 8.

    8 x 28 x 28 is 6272 symbols at 224², as many as spic-s16's 32 x 14 x 14. The camera runs the
    reference's stem and first two stages, about 0.56 GFLOP at 224² (tests/test_models.py). Train
    it from the reference bundle (TrainConfig.init_from); see models/split_resnet.py."""
    base = dict(backbone="resnet", latent_channels=8, dec_channels=(128, 64))
    return SPIC(SPICConfig(**{**base, **overrides}))


@register_model(kind="spic")
def spic_rn18h_lite(**overrides) -> SPIC:
    """ResNet18-half cut after its first stage, the latent conv taking the second stage's stride:
    the same 8 x 28 x 28 latent for about 0.36 GFLOP on the camera, the cloud running the whole
    second stage on the latent (its first block at stride 1)."""
    base = dict(
        backbone="resnet",
        resnet_split=1,
        latent_stride=2,
        latent_channels=8,
        dec_channels=(128, 64),
    )
    return SPIC(SPICConfig(**{**base, **overrides}))


@register_model(kind="spic")
def spic_rn18h_s16(**overrides) -> SPIC:
    """ResNet18-half cut after its second stage, the latent conv taking the third stage's stride:
    32 x 14 x 14, v1's latent grid, instead of the 8 x 28 x 28 of the other cuts. Runs 11 and 12
    kept only 71-78% at QF 1 on the 28 x 28 grid (docs/research/training-log.md), where v1's 14 x 14
    keeps 80.5% at 0.08 bpp: a coarse QF spends its bits on fewer, richer symbols. The camera runs
    the stem and two stages, about 0.56 GFLOP at 224²; the cloud runs stage three at 14 x 14."""
    base = dict(
        backbone="resnet",
        resnet_split=2,
        latent_stride=2,
        latent_channels=32,
        dec_channels=(128, 64, 32),
    )
    return SPIC(SPICConfig(**{**base, **overrides}))


@register_model(kind="spic")
def spic_rn_tiny(**overrides) -> SPIC:
    """The split layout at resnet-tiny's widths, so tests can initialise it from a tiny reference."""
    base = dict(
        backbone="resnet",
        resnet_stem=8,
        resnet_widths=(8, 16, 32, 64),
        resnet_blocks=(1, 1, 1, 1),
        latent_channels=4,
        dec_channels=(8, 8),
        density_mixtures=2,
    )
    return SPIC(SPICConfig(**{**base, **overrides}))


@register_model(kind="spic")
def spic_s8(**overrides) -> SPIC:
    """Closer to the paper's layout: stride 8 (three convs), for higher-rate, sharper recon."""
    base = dict(enc_channels=(32, 64), enc_kernels=(5, 5), latent_kernel=5, dec_channels=(64, 32))
    return SPIC(SPICConfig(**{**base, **overrides}))


@register_model(kind="spic")
def spic_tiny(**overrides) -> SPIC:
    """A few-thousand-parameter model for tests and smoke runs; not for accuracy."""
    base = dict(
        enc_channels=(8, 8, 8),
        enc_kernels=(3, 3, 3),
        latent_channels=4,
        dec_channels=(8, 8, 8),
        cls_widths=(8, 16),
        cls_blocks=1,
        density_mixtures=2,
    )
    return SPIC(SPICConfig(**{**base, **overrides}))
