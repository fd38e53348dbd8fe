"""The ``oe`` reject score: a logistic detector trained with outlier exposure on a head's scores.

Outlier exposure (Hendrycks, Mazeika and Dietterich, "Deep anomaly detection with outlier
exposure", ICLR 2019) teaches a model what "none of these" looks like from photos of other
things. Here the head itself is left as it is (its labels, and the codec, do not move): a
logistic regression is trained, on the cloud side, to tell the head's training frames from
outlier photos, reading eight numbers the head already gives for every frame (``INPUTS``):

* the ``knn`` similarity to the bank (``shared.reject``), and the same on each of its two blocks
  alone: the graph's features, and the latent's per-channel mean and standard deviation;
* the largest softmax probability and the energy (log-sum-exp) of the logits;
* the log of the graph features' L2 norm and of their mean, and the log of the share of them
  above zero: how strongly the trunk fires, which a frame of nothing it knows tends not to.

Eight numbers rather than the 320 features themselves: a detector on all features learned what
the outlier photos looked like (it let 70-90% of the hand signs through, docs/research/unknown.md);
one on a few scores generalises to photos unlike its outliers. The detector is a JSON file of the
head (``OEDetector``), evaluated here in numpy; higher is more familiar, like every score.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.reject import knn_score, softmax

INPUTS = (
    "knn",
    "knn_features",
    "knn_latent",
    "max_softmax",
    "energy",
    "log_norm",
    "log_mean",
    "log_active",
)
MAX_DETECTOR_BYTES = 64 << 10  # a few hundred bytes of numbers; refused unread beyond this


class OEDetector(BaseModel):
    """``score = bias + sum(weights * (inputs - mean) / scale)``: the log-odds of "familiar"."""

    model_config = ConfigDict(extra="forbid")

    format: str = Field("spic-oe-logistic-1", pattern=r"^spic-oe-logistic-1$")
    inputs: list[str]
    mean: list[float]
    scale: list[float]
    weights: list[float]
    bias: float
    trained: dict[str, str | int | float] = Field(default_factory=dict, description="provenance")

    @model_validator(mode="after")
    def _shapes(self) -> OEDetector:
        if tuple(self.inputs) != INPUTS:
            raise ValueError(f"a detector reads {INPUTS}, not {self.inputs}")
        n = len(INPUTS)
        if not len(self.mean) == len(self.scale) == len(self.weights) == n:
            raise ValueError(f"a detector has {n} means, scales and weights")
        if min(self.scale) <= 0:
            raise ValueError("a detector's scales are positive")
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        out: np.ndarray = (z @ np.asarray(self.weights) + self.bias).astype(np.float32)
        return out


def load_detector(path: Path) -> OEDetector:
    if path.stat().st_size > MAX_DETECTOR_BYTES:
        raise ValueError(f"{path}: a detector is at most {MAX_DETECTOR_BYTES} bytes")
    return OEDetector.model_validate(json.loads(path.read_text()))


def save_detector(detector: OEDetector, path: Path) -> None:
    path.write_text(detector.model_dump_json(indent=1) + "\n")


def _unit(b: np.ndarray) -> np.ndarray:
    out: np.ndarray = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-9)
    return out


def oe_inputs(
    features: np.ndarray,
    head_features: np.ndarray,
    logits: np.ndarray,
    bank: np.ndarray,
    k: int,
) -> np.ndarray:
    """The detector's (N, 8) inputs, ``INPUTS``. ``features`` are ``familiar_features``' (graph
    block first, then the latent block), ``head_features`` the graph's raw ``features`` output."""
    d = head_features.shape[1]
    hf = head_features.astype(np.float64)
    m = logits.max(axis=-1)
    energy = m + np.log(np.exp(logits - m[:, None]).sum(axis=-1))
    cols = [
        knn_score(features, bank, k),
        knn_score(_unit(features[:, :d]), _unit(bank[:, :d]), k),
        knn_score(_unit(features[:, d:]), _unit(bank[:, d:]), k),
        softmax(logits).max(axis=-1),
        energy,
        np.log(np.linalg.norm(hf, axis=1) + 1e-6),
        np.log(np.abs(hf.mean(axis=1)) + 1e-6),
        np.log((hf > 0).mean(axis=1) + 1e-3),
    ]
    return np.stack(cols, axis=1).astype(np.float64)


def oe_score(
    features: np.ndarray,
    head_features: np.ndarray,
    logits: np.ndarray,
    bank: np.ndarray,
    k: int,
    detector: OEDetector,
) -> np.ndarray:
    """The familiarity of each of N frames by the detector (its log-odds): (N,)."""
    return detector(oe_inputs(features, head_features, logits, bank, k))
