"""Pixel-domain reference classifiers from the ResNet family (He et al., 2016).

They stand in for the paper's ResNet50 and VGG19 columns: a classifier that sees decoded pixels,
trained by this project on the same train split as SPIC, so "JPEG + reference CNN" is a baseline
a camera maker could actually deploy. The input is the same as SPIC's encoder takes, float32
(N, 3, H, W) in [0, 1]; ImageNet mean/std normalisation is inside the graph, so the exported ONNX
file needs no preprocessing beyond the center crop.

Registered names (timm-style, tests run over all of them):

    resnet18          BasicBlock [2, 2, 2, 2], widths 64..512   (3.63 GFLOP at 224², 11.2 M params)
    resnet18-half     BasicBlock [2, 2, 2, 2], widths 32..256   (0.97 GFLOP at 224², 2.8 M params)
    resnet-tiny       BasicBlock [1, 1, 1, 1], widths 8..64     (for tests)

GFLOP = 2 x the convolutions' multiply-accumulates, counted by ``models.network.count_conv_macs``;
``tests/test_reference.py`` checks the figures above.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from models.blocks import BasicBlock
from models.registry import register_model

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass
class ResNetConfig:
    widths: tuple[int, ...] = (64, 128, 256, 512)
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    num_classes: int = 10
    stem_width: int = 64

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"], d["blocks"] = list(self.widths), list(self.blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ResNetConfig:
        d = dict(d)
        d["widths"], d["blocks"] = tuple(d["widths"]), tuple(d["blocks"])
        return cls(**d)


class ResNet(nn.Module):
    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        self.cfg = cfg
        self.mean: torch.Tensor  # buffers, declared for the type checker
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.stem = nn.Sequential(
            nn.Conv2d(3, cfg.stem_width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(cfg.stem_width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, c = [], cfg.stem_width
        for i, (w, n) in enumerate(zip(cfg.widths, cfg.blocks, strict=True)):
            for j in range(n):
                layers.append(BasicBlock(c, w, 2 if (j == 0 and i > 0) else 1, zero_init_last=True))
                c = w
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(c, cfg.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> logits (N, classes); any H, W that survive stride 32."""
        h = self.layers(self.stem((x - self.mean) / self.std))
        return self.head(h.mean((2, 3)))


@register_model(kind="reference")
def resnet18(num_classes: int = 10) -> ResNet:
    return ResNet(ResNetConfig(num_classes=num_classes))


@register_model(kind="reference")
def resnet18_half(num_classes: int = 10) -> ResNet:
    # Half the widths: a quarter of the FLOPs, so that training on 2 CPU cores fits in an hour.
    return ResNet(ResNetConfig((32, 64, 128, 256), (2, 2, 2, 2), num_classes, stem_width=32))


@register_model(kind="reference")
def resnet_tiny(num_classes: int = 10) -> ResNet:
    return ResNet(ResNetConfig((8, 16, 32, 64), (1, 1, 1, 1), num_classes, stem_width=8))


def display_name(name: str) -> str:
    """How reports write a registered name: ``resnet18-half`` -> ``ResNet18-half``."""
    return "ResNet" + name.removeprefix("resnet") if name.startswith("resnet") else name
