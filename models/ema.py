"""Exponential moving average of a network's weights (Polyak averaging), for both trainers.

The average is torch's own ``AveragedModel`` with its EMA update; this module only decides when
there is one and which weights a checkpoint's reader gets. A checkpoint keeps the live weights
under ``model`` (what ``--resume`` continues) and, when the run kept an average, the averaged ones
under ``ema_model`` (what export, evaluation and a fine-tune start from), so a reader never has to
know whether the run averaged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def ema_of(model: torch.nn.Module, decay: float) -> AveragedModel | None:
    """A copy of ``model`` that follows it as ``avg ← decay·avg + (1 − decay)·weights`` at each
    ``update_parameters(model)``, buffers (BatchNorm statistics) included; None for ``decay`` 0.

    Make it before registering forward hooks on ``model``: the copy would carry them."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {decay}")
    if decay == 0.0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def ema_state(ema: AveragedModel | None) -> dict[str, Any]:
    """The checkpoint entries of an average: its weights, and its own state for ``--resume``."""
    if ema is None:
        return {}
    return {"ema_model": ema.module.state_dict(), "ema_state": ema.state_dict()}


def final_weights(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a finished run stands for: the average when the run kept one."""
    weights: dict[str, torch.Tensor] = ckpt.get("ema_model") or ckpt["model"]
    return weights
