"""``spic-head``'s training: a new classifier head on the latents a codec's cameras send.

Three kinds of head, all reading the base latent ŷ (N, C, h, w) and all exported alike
(``models.head_export``): logits and the pooled features the reject rule compares.

    linear    the shipped head's trunk, frozen, and a new linear layer on its pooled features.
              The trunk runs once per frame (features cached), so training is a logistic
              regression: seconds.
    conv      a small conv net on the latent, trained from nothing: no dependence on what the
              bundle's head was trained for.
    finetune  the shipped head's trunk, every layer trained (from the bundle's weights, at
              the new layer's learning rate, ``TRUNK_RATIO``), with a new last layer.

The trunk is the bundle's ``classifier.onnx`` replayed in torch (``models.onnx_trunk``), so any
bundle serves, without the checkpoint it came from. Which kind wins at which data size is
measured by ``bench/heads.py`` (``docs/research/heads.md``): ``conv``, the default.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.head_data import LatentSet
from models.onnx_trunk import OnnxTrunk
from shared.runtime import SpicCodec

Kind = Literal["linear", "conv", "finetune"]
KINDS: tuple[Kind, ...] = ("linear", "conv", "finetune")
# Epochs per kind: a linear layer on cached features converges in many cheap epochs; a trunk pass
# per frame and step is what costs, so the fine-tune gets few (docs/research/heads.md).
EPOCHS: dict[Kind, int] = {"linear": 60, "conv": 40, "finetune": 5}
LR: dict[Kind, float] = {"linear": 3e-3, "conv": 2e-3, "finetune": 1e-3}
# The default kind: on both measured sets, at a quarter and all of the training split, the conv
# head was the most accurate or tied, and cheaper than the fine-tune (docs/research/heads.md).
DEFAULT_KIND: Kind = "conv"
# finetune: the trunk's learning rate over the new layer's. A tenth left both fine-tunes (this
# one and the pixel baseline's) far from converged in 5 epochs: 33% and 32% on a quarter of
# sign_digits, against 69% at the full rate (docs/research/heads.md).
TRUNK_RATIO = 1.0


class SmallConv(nn.Module):
    """The ``conv`` kind's features: three 3x3 conv layers, the second halving the latent grid."""

    def __init__(self, channels: int, width: int = 128):
        super().__init__()
        self.width = width
        self.net = nn.Sequential(
            nn.Conv2d(channels, 64, 3, 1, 1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.Conv2d(64, width, 3, 2, 1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, 1, 1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(latent).mean((2, 3))  # type: ignore[no-any-return]


class LatentHead(nn.Module):
    """latent -> (logits, features): a feature net and a linear layer, as head.onnx holds it."""

    def __init__(self, features: nn.Module, width: int, classes: int, dropout: float = 0.2):
        super().__init__()
        self.features = features
        self.drop = nn.Dropout(dropout)
        self.last = nn.Linear(width, classes)

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(latent)
        return self.last(self.drop(f)), f


def build_head(codec: SpicCodec, kind: Kind, classes: int) -> LatentHead:
    """A head of ``kind`` for ``codec``'s latent, its trunk from the bundle's classifier."""
    body: nn.Module
    if kind == "conv":
        conv = SmallConv(codec.manifest.latent.channels)
        body, width = conv, conv.width
    else:
        trunk = OnnxTrunk(codec.path / codec.manifest.files["classifier"].path)
        body, width = trunk, trunk.width
        if kind == "linear":
            body.requires_grad_(False)
    return LatentHead(body, width, classes)


@dataclass
class TrainResult:
    model: LatentHead
    kind: Kind
    epochs: int
    seconds: float
    cpu_seconds: float  # the process's CPU time: what a shared machine's load does not inflate
    losses: list[float] = field(default_factory=list)


def _batches(n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i : i + size] for i in range(0, n, size)]


def _views(latent: np.ndarray, index: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """One view per frame, at random (the image or its mirror)."""
    v = rng.integers(0, latent.shape[1], len(index))
    return torch.from_numpy(np.ascontiguousarray(latent[index, v], dtype=np.float32))


@torch.no_grad()
def trunk_features(trunk: nn.Module, latent: np.ndarray, batch: int = 128) -> np.ndarray:
    """(N, V, C, h, w) latents -> (N, V, D) features of a frozen trunk."""
    trunk.eval()
    n, v = latent.shape[:2]
    flat = latent.reshape(n * v, *latent.shape[2:])
    out = [
        trunk(torch.from_numpy(np.ascontiguousarray(flat[i : i + batch], dtype=np.float32)))
        for i in range(0, len(flat), batch)
    ]
    return torch.cat(out).numpy().reshape(n, v, -1)


def train_head(
    codec: SpicCodec,
    train: LatentSet,
    qf: int | None,
    kind: Kind,
    epochs: int | None = None,
    batch: int = 64,
    seed: int = 0,
    progress: bool = True,
    mix: list[int] | None = None,
) -> TrainResult:
    """Train a head of ``kind`` on ``train``'s latents at ``qf``, or, with ``mix``, each batch at
    one of those QFs per frame, drawn at random (a head trained at one QF fails at the others:
    docs/research/heads.md); the seconds count every step after the latents are in memory (the
    trunk's feature pass included)."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    epochs = EPOCHS[kind] if epochs is None else epochs
    model = build_head(codec, kind, len(train.classes))
    start, cpu = time.perf_counter(), time.process_time()
    if mix and (kind == "linear" or train.qfs is not None):
        raise ValueError("a QF mix needs encoder outputs (--data) and a conv or finetune head")
    latent = train.latent if mix else train.at(codec, qf)
    labels = torch.from_numpy(train.labels)
    data = trunk_features(model.features, latent) if kind == "linear" else latent
    if kind == "finetune":
        groups = [
            {"params": model.features.parameters(), "lr": LR[kind] * TRUNK_RATIO},
            {"params": model.last.parameters(), "lr": LR[kind]},
        ]
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": LR[kind]}]
    opt = torch.optim.AdamW(groups, weight_decay=1e-4 if kind == "finetune" else 1e-2)
    steps = epochs * math.ceil(len(train) / batch)
    peaks = [float(g["lr"]) for g in groups]  # type: ignore[arg-type]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, peaks, total_steps=steps, pct_start=0.15)
    losses: list[float] = []
    bar = tqdm(total=steps, desc=f"train {kind}", unit="step", disable=not progress)
    for _ in range(epochs):
        model.train()
        if kind == "linear":
            model.features.eval()
        total = 0.0
        for index in _batches(len(train), batch, rng):
            x = _views(data, index, rng)
            if mix:
                # A QF per frame, not per batch: BatchNorm would otherwise normalise each QF
                # apart in training and all of them together at inference.
                qs = [codec.manifest.base_qf_at(int(q)) for q in rng.choice(mix, len(index))]
                q = torch.tensor(qs, dtype=torch.float32).view(-1, 1, 1, 1)
                x = torch.minimum(torch.floor(x * q + 0.5), q) / q  # shared.quantize's rule
            logits = model.last(model.drop(x)) if kind == "linear" else model(x)[0]
            loss = F.cross_entropy(logits, labels[index], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(index)
            bar.update(1)
        losses.append(total / len(train))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return TrainResult(model.eval(), kind, epochs, wall, cpu, losses)


@torch.no_grad()
def predict(model: LatentHead, latent: np.ndarray, batch: int = 128) -> tuple[np.ndarray, ...]:
    """(N, C, h, w) latents -> (logits, features) as numpy."""
    model.eval()
    outs = [
        model(torch.from_numpy(np.ascontiguousarray(latent[i : i + batch], dtype=np.float32)))
        for i in range(0, len(latent), batch)
    ]
    return tuple(torch.cat([o[j] for o in outs]).numpy() for j in range(2))


def top1_per_qf(
    codec: SpicCodec, model: LatentHead, val: LatentSet, qfs: list[int]
) -> dict[str, float]:
    """Val top-1 of the head at each QF (images: re-quantized from one encoder pass; frames from
    the cloud: grouped by the QF they were sent at)."""
    if val.qfs is not None:
        logits = predict(model, val.latent[:, 0])[0]
        hit = logits.argmax(1) == val.labels
        return {str(q): float(hit[val.qfs == q].mean()) for q in val.sent_qfs()}
    out = {}
    for q in qfs:
        logits = predict(model, val.at(codec, q)[:, 0])[0]
        out[str(q)] = float((logits.argmax(1) == val.labels).mean())
    return out
