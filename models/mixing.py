"""Mixup (Zhang et al., ICLR 2018) and CutMix (Yun et al., ICCV 2019) on a training batch.

Each batch is mixed with a shuffled copy of itself: Mixup blends the two images, CutMix pastes a
box of one into the other. The target becomes the two labels weighed by λ (the blend, or the share
of pixels each image keeps), so the loss is ``λ·CE(a) + (1 − λ)·CE(b)``. A distillation teacher
needs no such care: it reads the mixed image itself.

Draws come from the caller's numpy generator, seeded per epoch, so ``--resume`` replays them.
(timm has the same transform, but timm needs torchvision, which this project never depends on.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Mixed:
    x: torch.Tensor
    labels_a: torch.Tensor
    labels_b: torch.Tensor
    lam: float  # weight of labels_a


def mix_batch(
    x: torch.Tensor,
    labels: torch.Tensor,
    rng: np.random.Generator,
    mixup_alpha: float,
    cutmix_alpha: float,
) -> Mixed:
    """Mix (N, C, H, W) ``x``: CutMix or Mixup, drawn half and half when both alphas are > 0, λ
    from Beta(α, α); both 0 returns the batch as it is (λ = 1)."""
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError("mixup_alpha and cutmix_alpha must be >= 0")
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return Mixed(x, labels, labels, 1.0)
    perm = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    if cutmix_alpha > 0 and (mixup_alpha == 0 or rng.random() < 0.5):
        lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
        h, w = x.shape[2], x.shape[3]
        # A box of area (1 - λ)·H·W centred anywhere, clipped at the borders; λ is then recomputed
        # from the pixels actually pasted.
        bh, bw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - bh // 2, 0), min(cy + bh - bh // 2, h)
        x0, x1 = max(cx - bw // 2, 0), min(cx + bw - bw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        lam = float(rng.beta(mixup_alpha, mixup_alpha))
        x = lam * x + (1 - lam) * x[perm]
    return Mixed(x, labels, labels[perm], lam)


def mixed_cross_entropy(logits: torch.Tensor, mixed: Mixed, label_smoothing: float) -> torch.Tensor:
    """λ·CE(logits, a) + (1 − λ)·CE(logits, b); plain cross-entropy for an unmixed batch."""
    ce_a = F.cross_entropy(logits, mixed.labels_a, label_smoothing=label_smoothing)
    if mixed.lam == 1.0:
        return ce_a
    ce_b = F.cross_entropy(logits, mixed.labels_b, label_smoothing=label_smoothing)
    return mixed.lam * ce_a + (1 - mixed.lam) * ce_b
