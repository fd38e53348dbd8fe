"""The rate term: a learned per-channel density over the bounded latent.

Each latent channel c has a mixture of K logistics on [0, 1]. The probability of a quantized
value ŷ = k/QF is the mass of its bin, as in CompressAI's EntropyBottleneck (likelihoods over
ŷ ± ½ step)::

    P(k) = F_c((k + ½)/QF) − F_c((k − ½)/QF),   with F_c(+∞) at k = QF and F_c(−∞) at k = 0

The end bins run to ±∞, so the mass the sigmoid piles up at 0 and 1 is priced correctly. Because
the density lives on the continuous latent, one set of parameters prices every QF: this is what
lets a single network serve QF 16, 48 and 128.

This model is only the training-time estimate. Real frames are coded with integer frequency
tables measured on training latents at export time, so encoder and decoder never recompute floats.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Bins can have (numerically) zero mass; the floor keeps log finite and costs at most ~30 bits.
LIKELIHOOD_FLOOR = 1e-9


class FactorizedDensity(nn.Module):
    def __init__(self, channels: int, mixtures: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(channels, mixtures))
        # Spread the initial components over [0, 1] so each can claim a mode.
        self.means = nn.Parameter(torch.linspace(0.05, 0.95, mixtures).repeat(channels, 1))
        self.log_scales = nn.Parameter(torch.full((channels, mixtures), math.log(0.05)))

    def cdf(self, v: torch.Tensor) -> torch.Tensor:
        """Mixture CDF, channel-wise: v (N,C,h,w) -> F_c(v) (N,C,h,w)."""
        weights = torch.softmax(self.logits, dim=-1)[None, :, None, None, :]
        means = self.means[None, :, None, None, :]
        inv_scales = torch.exp(-self.log_scales)[None, :, None, None, :]
        return (torch.sigmoid((v.unsqueeze(-1) - means) * inv_scales) * weights).sum(-1)

    def likelihood(self, y_hat: torch.Tensor, qf: int) -> torch.Tensor:
        """Probability of each quantized latent value at ``qf`` (same shape as ``y_hat``)."""
        half = 0.5 / qf
        scaled = y_hat * qf
        upper = torch.where(scaled > qf - 0.5, torch.ones_like(y_hat), self.cdf(y_hat + half))
        lower = torch.where(scaled < 0.5, torch.zeros_like(y_hat), self.cdf(y_hat - half))
        return torch.clamp(upper - lower, min=LIKELIHOOD_FLOOR)


def bits_per_pixel(likelihoods: torch.Tensor, pixels: int) -> torch.Tensor:
    """Estimated rate of each image in the batch, in bits per input pixel."""
    return -torch.log2(likelihoods).flatten(1).sum(1) / pixels
