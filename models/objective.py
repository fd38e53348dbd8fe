"""What SPIC's training optimizes and measures: the loss terms' weights and targets, the dual update
of the rate weight alpha, and validation (top-1, rate estimate and PSNR per QF).

L = w(QF)·MSE + alpha·rate + beta·cross-entropy (+ the latent's saturation penalty and, for
"resnet" models, feature distillation); the "why" of every number is in ``TrainConfig``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from models.config import TrainConfig
from models.entropy_model import bits_per_pixel
from models.network import SPIC, quantize
from models.trainer import to_tensor


def psnr_db(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [0, 1] (peak 1); MSE floored at 1e-10 (100 dB)."""
    mse = ((x_hat - x) ** 2).flatten(1).mean(1)
    return -10 * mse.clamp_min(1e-10).log10()


@torch.no_grad()
def evaluate(
    model: SPIC, images: np.ndarray, labels: np.ndarray, qfs, device, batch: int = 100
) -> dict:
    """Top-1 unquantized and per QF, the model's rate estimate, and reconstruction PSNR."""
    model.eval()
    correct = {"none": 0, **{q: 0 for q in qfs}}
    bits = {q: 0.0 for q in qfs}
    psnr_sum = {q: 0.0 for q in qfs}  # dB, summed over images
    for i in range(0, len(images), batch):
        x = to_tensor(images[i : i + batch], device)
        y_true = torch.from_numpy(labels[i : i + batch]).to(device)
        y = model.g_a(x)
        correct["none"] += (model.h_c(y).argmax(1) == y_true).sum().item()
        for q in qfs:
            y_hat = quantize(y, q, "ste")
            correct[q] += (model.h_c(y_hat).argmax(1) == y_true).sum().item()
            lik = model.entropy_model.likelihood(y_hat, q)
            bits[q] += bits_per_pixel(lik, x.shape[2] * x.shape[3]).sum().item()
            psnr_sum[q] += psnr_db(model.g_s(y_hat), x).sum().item()
    n = len(images)
    out: dict[str, object] = {"top1_unquantized": correct["none"] / n}
    for q in qfs:
        out[f"qf{q}"] = {"top1": correct[q] / n, "model_bpp": bits[q] / n, "psnr": psnr_sum[q] / n}
    model.train()
    return out


def rate_target(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The rate the dual update steers to: annealed from the start value to the final one."""
    frac = min(1.0, step / max(1.0, cfg.rate_anneal_frac * total_steps))
    return cfg.rate_target_start_bpp + frac * (cfg.rate_target_bpp - cfg.rate_target_start_bpp)


def saturation_penalty(z: torch.Tensor, margin: float) -> torch.Tensor:
    """mean(max(|z| - margin, 0)²) over the latent's logits z: zero inside ±margin."""
    return F.relu(z.abs() - margin).pow(2).mean()


def mse_weight(qf: int, cfg: TrainConfig) -> float:
    """The reconstruction term's weight at ``qf``: mse_weight·(qf / rate_target_qf)^mse_qf_exponent."""
    return float(cfg.mse_weight * (qf / cfg.rate_target_qf) ** cfg.mse_qf_exponent)


def feature_distill_weight(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The feature term's weight: feature_distill_weight at step 0, falling linearly to 0."""
    frac = step / max(1.0, cfg.feature_distill_frac * total_steps)
    return cfg.feature_distill_weight * max(0.0, 1.0 - frac)


def update_alpha(
    log_alpha: float, measured_bpp: float, target_bpp: float, cfg: TrainConfig
) -> float:
    """One dual-ascent step on log(alpha): raise the rate weight when the rate is over target,
    lower it when under; the relative error is clipped to +-0.5 so one odd batch cannot swing it,
    and alpha stays in [alpha_min, alpha_max]."""
    rel = (measured_bpp - target_bpp) / target_bpp
    log_alpha += cfg.alpha_lr * max(-0.5, min(0.5, rel))
    return min(max(log_alpha, math.log(cfg.alpha_min)), math.log(cfg.alpha_max))
