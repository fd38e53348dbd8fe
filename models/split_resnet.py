"""A reference ResNet split between the camera and the cloud, with the latent in the cut.

    camera (g_a):  x ─ stem ─ stages[:split] ─ conv 3x3 (→ C, stride s) ─ sigmoid ─► y
    cloud  (h_c):  ŷ ─ conv 3x3 (C → w) ─ ReLU ─ stages[split:] ─ pool ─ linear ─► logits

This is the layout of supervised compression for edge computing (Matsubara et al., "Supervised
compression for resource-constrained edge computing systems", WACV 2022; Singh et al., "End-to-end
learning of compressible features", ICIP 2020): a classifier cut in two, a narrow quantized
bottleneck at the cut, and both halves started from a trained classifier. Here that classifier is a
reference bundle trained by this project from scratch (``models/reference.py``); no ImageNet weight
is involved. The camera then starts from features that already separate the classes, and training
only has to teach the bottleneck and the reconstruction decoder, instead of growing a classifier
from nothing behind a 6272-symbol latent in 150 CPU minutes (issue 11, item 3).

The blocks are ``models/reference.py``'s with BatchNorm folded into the convolutions, which is the
form the reference's ONNX file holds (``init_from_reference`` reads it; no torch checkpoint is
needed). Without BatchNorm the halves train only from such a start, so every ``resnet`` backbone
is meant to be initialised from a reference bundle of the same widths.

``s`` is the latent convolution's stride. With ``s = 2`` the cloud's first stage keeps stride 1,
so the cloud half is the reference's own stages at the reference's own scales.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.reference import MEAN, STD


class FoldedBlock(nn.Module):
    """ResNet's basic block with BatchNorm folded into biased convolutions (as in its ONNX form)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.shortcut(x))


def _stage(cin: int, width: int, blocks: int, stride: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for j in range(blocks):
        layers.append(FoldedBlock(cin, width, stride if j == 0 else 1))
        cin = width
    return layers


def camera_layers(cfg: Any) -> list[nn.Module]:
    """g_a's layers up to and including the sigmoid: the reference's first ``resnet_split`` stages."""
    layers, cin = _reference_layers(cfg, cfg.resnet_split)
    layers += [nn.Conv2d(cin, cfg.latent_channels, 3, cfg.latent_stride, 1), nn.Sigmoid()]
    return layers


def _reference_layers(cfg: Any, stages: int) -> tuple[list[nn.Module], int]:
    """The reference's stem and first ``stages`` stages at the reference's strides, and their width."""
    return _folded_resnet(cfg.resnet_stem, cfg.resnet_widths, cfg.resnet_blocks, stages)


def _folded_resnet(
    stem: int, widths: Sequence[int], blocks: Sequence[int], stages: int
) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = [nn.Conv2d(3, stem, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = stem
    for i in range(stages):
        layers += _stage(cin, widths[i], blocks[i], 2 if i > 0 else 1)
        cin = widths[i]
    return layers, cin


def cloud_layers(cfg: Any) -> tuple[list[nn.Module], int]:
    """h_c's feature layers (the adapter, then the reference's remaining stages) and their width."""
    cin = cfg.resnet_widths[cfg.resnet_split - 1]
    # The adapter maps the C-channel latent back to the width the next stage was trained on.
    layers: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, cin, 3, 1, 1), nn.ReLU()]
    for i in range(cfg.resnet_split, len(cfg.resnet_widths)):
        # The latent conv's stride already took the first cloud stage's downsampling.
        stride = 2 if (i > cfg.resnet_split or cfg.latent_stride == 1) else 1
        layers += _stage(cin, cfg.resnet_widths[i], cfg.resnet_blocks[i], stride)
        cin = cfg.resnet_widths[i]
    return layers, cin


def matched_stages(cfg: Any) -> int:
    """How many of the reference's stages end where the cloud's first stage ends: the point at
    which ``h_c``'s features and the reference's share a resolution and a width, so the student can
    be taught the teacher's features there (feature distillation). With ``latent_stride`` 2 the
    cloud's first stage stands in for the reference's stage ``resnet_split``; with 1 the adapter
    stands in for the camera's last stage."""
    return cfg.resnet_split + (1 if cfg.latent_stride > 1 else 0)


def matched_layers(cfg: Any) -> int:
    """How many of ``h_c.features``' layers run up to that point: the adapter (conv, ReLU) and, with
    ``latent_stride`` 2, the first cloud stage's blocks."""
    return 2 + (cfg.resnet_blocks[cfg.resnet_split] if cfg.latent_stride > 1 else 0)


def reference_trunk(cfg: Any, bundle: str | Path) -> nn.Sequential:
    """The reference bundle's stem and first ``matched_stages(cfg)`` stages at their own strides,
    with its weights and frozen: the teacher's features at the cut."""
    from models.reference_bundle import load_reference_manifest

    trunk = nn.Sequential(*_reference_layers(cfg, matched_stages(cfg))[0])
    manifest = load_reference_manifest(bundle)
    convs, _ = reference_weights(Path(bundle) / manifest.files["classifier"].path)
    ours = _convs(trunk)
    _load_convs(ours, convs[: len(ours)], manifest)
    return trunk.eval().requires_grad_(False)


class FoldedReference(nn.Module):
    """A whole reference classifier in torch, BatchNorm folded: the same function as its ONNX
    file, for a teacher that runs on the training device (a GPU) instead of in ONNX Runtime."""

    def __init__(self, stem: int, widths: Sequence[int], blocks: Sequence[int], classes: int):
        super().__init__()
        self.mean: torch.Tensor  # buffers, declared for the type checker
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        layers, width = _folded_resnet(stem, widths, blocks, len(widths))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> logits, as the bundle's classifier.onnx."""
        return self.head(self.features((x - self.mean) / self.std).mean((2, 3)))  # type: ignore[no-any-return]


@torch.no_grad()
def reference_network(bundle: str | Path) -> FoldedReference:
    """A reference bundle's classifier as a frozen torch module, weights read from its ONNX file."""
    from models.reference_bundle import load_reference_manifest

    manifest = load_reference_manifest(bundle)
    arch = manifest.architecture_config
    net = FoldedReference(arch["stem_width"], arch["widths"], arch["blocks"], arch["num_classes"])
    convs, (head_w, head_b) = reference_weights(Path(bundle) / manifest.files["classifier"].path)
    _load_convs(_convs(net.features), convs, manifest)
    net.head.weight.copy_(torch.from_numpy(np.array(head_w)))
    net.head.bias.copy_(torch.from_numpy(np.array(head_b)))
    return net.eval().requires_grad_(False)


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    """Convolutions in module order: stem, then conv1, conv2, shortcut of each block (the order the
    reference's exporter wrote its weights in)."""
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def reference_weights(onnx_path: str | Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple]:
    """The (weight, bias) of every Conv of a reference ONNX file in graph order, and its Gemm head."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    convs, head = [], None
    for node in graph.node:
        if node.op_type == "Conv":
            convs.append((init[node.input[1]], init[node.input[2]]))
        elif node.op_type == "Gemm":
            head = (init[node.input[1]], init[node.input[2]])
    if head is None:
        raise ValueError(f"{onnx_path}: no Gemm head; not a reference classifier")
    return convs, head


@torch.no_grad()
def _load_convs(
    ours: list[nn.Conv2d], convs: list[tuple[np.ndarray, np.ndarray]], manifest: Any
) -> None:
    """Copy a reference's (weight, bias) pairs into ``ours``, in order; refuse other shapes,
    naming the bundle and both shape lists, before anything is copied."""
    shapes = [tuple(c.weight.shape) for c in ours]
    theirs = [tuple(w.shape) for w, _ in convs]
    if shapes != theirs:
        raise ValueError(
            f"reference bundle {manifest.model_id} ({manifest.architecture}) has convolutions "
            f"{theirs}, the model has {shapes}"
        )
    for conv, (w, b) in zip(ours, convs, strict=True):
        assert conv.bias is not None
        conv.weight.copy_(torch.from_numpy(np.array(w)))
        conv.bias.copy_(torch.from_numpy(np.array(b)))


@torch.no_grad()
def init_from_reference(model: Any, bundle: str | Path, class_ids: list[str] | None = None) -> str:
    """Copy a reference bundle's weights into a ``resnet``-backbone SPIC: its first stages into
    g_a, its later stages and head into h_c. The latent conv, the adapter and g_s stay as
    initialised. Returns the reference's model id; a bundle of other widths, or of classes other
    than ``class_ids`` (when given), is refused by name."""
    from models.reference_bundle import check_classes, load_reference_manifest

    manifest = load_reference_manifest(bundle)
    if class_ids is not None:
        check_classes(manifest, class_ids, "the training data")
    convs, (head_w, head_b) = reference_weights(Path(bundle) / manifest.files["classifier"].path)
    camera = _convs(model.g_a)[:-1]  # without the latent conv
    cloud = _convs(model.h_c.features)[1:]  # without the adapter
    _load_convs(camera + cloud, convs, manifest)
    linear = model.h_c.head[-1]
    if tuple(linear.weight.shape) != head_w.shape:
        raise ValueError(
            f"reference bundle {manifest.model_id} has a {head_w.shape} head, the model "
            f"{tuple(linear.weight.shape)}"
        )
    linear.weight.copy_(torch.from_numpy(np.array(head_w)))
    linear.bias.copy_(torch.from_numpy(np.array(head_b)))
    return manifest.model_id
