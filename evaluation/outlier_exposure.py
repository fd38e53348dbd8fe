"""Train the ``oe`` reject detector (``shared.reject_oe``): outlier exposure on a frozen head.

In distribution: the head's training frames (never the bank's, never a validation frame), spread
over ``qfs`` so the detector sees the codec's rates, not one. Outliers: photos of other things,
from sources apart from the ones the rule is measured on (``docs/research/unknown.md``), at the
same QFs. The detector is a logistic regression on the eight ``INPUTS``, standardised, classes
weighted equally, an L2 penalty, full-batch Adam from zero weights: deterministic, and seconds
on a CPU once the frames are encoded.

Used by ``python -m evaluation.unknown ... --outliers DIR`` (repeat); this module holds no CLI.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np

from shared.reject_oe import INPUTS, OEDetector, oe_inputs

Frames = tuple[np.ndarray, np.ndarray, np.ndarray]  # logits, familiar features, graph features
Run = Callable[[list[Path], int, str], Frames]  # paths, QF, what -> the frames' outputs


def spread(paths: list[Path], qfs: list[int], seed: int) -> dict[int, list[Path]]:
    """Deal ``paths`` (shuffled with ``seed``) round-robin over ``qfs``."""
    order = list(paths)
    random.Random(seed).shuffle(order)
    return {q: sorted(order[i :: len(qfs)]) for i, q in enumerate(qfs)}


def inputs_at(
    run: Run, paths: list[Path], qfs: list[int], bank: np.ndarray, k: int, seed: int
) -> np.ndarray:
    """The detector's inputs for ``paths``, each encoded at one of ``qfs``: (N, 8)."""
    rows = []
    for q, part in spread(paths, qfs, seed).items():
        if part:
            logits, feats, raw = run(part, q, f"oe q{q}")
            rows.append(oe_inputs(feats, raw, logits, bank, k))
    return np.concatenate(rows) if rows else np.zeros((0, len(INPUTS)))


def train_detector(
    x_in: np.ndarray,
    x_out: np.ndarray,
    l2: float = 1e-2,
    steps: int = 400,
    lr: float = 0.01,
    trained: dict[str, str | int | float] | None = None,
) -> OEDetector:
    """Logistic regression, in distribution (1) against outliers (0), on standardised inputs."""
    x = np.concatenate([x_in, x_out]).astype(np.float64)
    y = np.concatenate([np.ones(len(x_in)), np.zeros(len(x_out))])
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    # Each class weighs half the loss, however many frames it has.
    weight = np.where(y == 1, 0.5 / len(x_in), 0.5 / len(x_out))
    w, b = np.zeros(z.shape[1]), 0.0
    m, v = np.zeros(z.shape[1] + 1), np.zeros(z.shape[1] + 1)
    for t in range(1, steps + 1):
        p = 1 / (1 + np.exp(-(z @ w + b)))
        g = (p - y) * weight
        grad = np.concatenate([z.T @ g + l2 * w, [g.sum()]])
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        step = lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        w, b = w - step[:-1], b - float(step[-1])
    return OEDetector(
        inputs=list(INPUTS),
        mean=mean.tolist(),
        scale=scale.tolist(),
        weights=w.tolist(),
        bias=b,
        trained=(trained or {})
        | {"n_in": len(x_in), "n_out": len(x_out), "l2": l2, "steps": steps},
    )
