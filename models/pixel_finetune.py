"""The pixel baseline ``spic-head`` is measured against: the pixel-domain reference classifier
fine-tuned on the same labelled images, decoded pixels in, no codec in the way.

The reference is a reference bundle (``models/reference_bundle.py``; the Imagenette-trained
``reference-imagenette-ema``, ResNet18-half, trained from nothing by this project, no ImageNet
weight), loaded as a torch module from its ONNX file (``models.split_resnet.reference_network``,
BatchNorm folded). Its last layer is replaced for the new classes and every layer is trained with
the recipe ``spic-head``'s fine-tune uses (AdamW, one-cycle, the trunk at ``TRUNK_RATIO`` of the
new layer's rate, label smoothing 0.1, a random mirror per image and epoch), on clean center crops as
the codec's cameras prepare them. The seconds count the training steps after the crops are in
memory, as ``spic-head``'s count them after the latents are.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.data import scan_image_folder
from models.head_train import TRUNK_RATIO
from shared.preprocess import load_rgb, prepare


@dataclass
class PixelSet:
    crops: np.ndarray  # (N, 3, H, W) uint8
    labels: np.ndarray
    classes: list[str]


def load_crops(root: Path, spec: dict, stride: int, classes: list[str] | None = None) -> PixelSet:
    """Every image of ``root/<class>/`` prepared by ``spec`` (a manifest's preprocessing)."""
    from concurrent.futures import ThreadPoolExecutor

    paths, labels, found = scan_image_folder(root)
    if classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        labels = np.asarray([index[found[j]] for j in labels], dtype=np.int64)

    def load(p: Path) -> np.ndarray:
        x = prepare(load_rgb(p), spec, stride)
        return (x * 255 + 0.5).astype(np.uint8)

    with ThreadPoolExecutor(2) as pool:
        crops = np.stack(list(pool.map(load, paths)))
    return PixelSet(crops, labels, classes or found)


def _float(crops: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(crops.astype(np.float32) / np.float32(255))


@dataclass
class PixelResult:
    top1: float
    seconds: float
    cpu_seconds: float
    epochs: int


def finetune_reference(
    reference: Path,
    train: PixelSet,
    val: PixelSet,
    epochs: int,
    lr: float = 1e-3,
    batch: int = 64,
    seed: int = 0,
) -> PixelResult:
    """Fine-tune ``reference`` (a reference bundle) on ``train``; its val top-1 and seconds."""
    from models.split_resnet import reference_network

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = reference_network(reference).requires_grad_(True)
    net.head = nn.Linear(net.head.in_features, len(train.classes))
    groups = [
        {"params": net.features.parameters(), "lr": lr * TRUNK_RATIO},
        {"params": net.head.parameters(), "lr": lr},
    ]
    opt = torch.optim.AdamW(groups, weight_decay=1e-4)
    steps = epochs * math.ceil(len(train.labels) / batch)
    peaks = [float(g["lr"]) for g in groups]  # type: ignore[arg-type]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, peaks, total_steps=steps, pct_start=0.15)
    labels = torch.from_numpy(train.labels)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        net.train()
        order = rng.permutation(len(train.labels))
        for i in range(0, len(order), batch):
            index = order[i : i + batch]
            x = _float(train.crops[index])
            flip = torch.from_numpy(rng.random(len(index)) < 0.5)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            loss = F.cross_entropy(net(x), labels[index], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    net.eval()
    with torch.no_grad():
        preds = torch.cat(
            [net(_float(val.crops[i : i + 128])).argmax(1) for i in range(0, len(val.labels), 128)]
        ).numpy()
    return PixelResult(float((preds == val.labels).mean()), seconds, cpu, epochs)
