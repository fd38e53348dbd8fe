"""When a classifier head says "unknown": its reject rule, and the scores the rule reads.

A head answers a label only when its frame looks like what the head was trained on. Each head
carries one rule, chosen by measurement (``python -m evaluation.unknown``) among:

* ``max_softmax``: the largest class probability (Hendrycks and Gimpel, ICLR 2017);
* ``energy``: log-sum-exp of the logits, the negative free energy (Liu et al., NeurIPS 2020);
* ``knn``: how close the frame sits to frames the head was trained on: the mean cosine similarity
  of its features to the ``k``-th nearest of a bank of training frames (Sun et al., "Out-of-
  distribution detection with deep nearest neighbors", ICML 2022). The features are the head
  graph's ``features`` output (when it has one) and the latent's per-channel mean and standard
  deviation, each block L2-normalised; the bank is a file of the head (``bank``, an ``.npy`` of
  float16): training frames' features, or their ``prototypes`` (spherical k-means centroids),
  which keep a bundle's bank at 64 kB for the same separation. Measured on the shipped head it
  separates foreign photos far better than the softmax (``docs/research/unknown.md``);
* ``oe``: a small detector trained with outlier exposure on the scores above and a few more
  (``shared.reject_oe``): a file of the head (``detector``) besides the ``knn`` bank.

Every score is oriented the same way, higher is more familiar; a frame is accepted when its score
is at least ``threshold``. The threshold is set on the head's own validation split so that a
stated share of its frames (``accept``, default 95%) is accepted; what the rule does on photos
from elsewhere is measured, not assumed (``measured``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

Score = Literal["max_softmax", "energy", "knn", "oe"]
# The scores that need nothing trained beyond the bank; ``oe`` needs outlier photos too.
SCORES: tuple[Score, ...] = ("max_softmax", "energy", "knn")
# A bank past this is refused before it is read: 20k frames x 1024 features of float16 is 40 MB,
# and every frame is compared with all of it.
MAX_BANK = 20_000
MAX_FEATURES = 1024


class RejectMeasured(BaseModel):
    """What the rule did on frames of the head's own validation split and on foreign photos."""

    model_config = ConfigDict(extra="forbid")

    auroc: float = Field(ge=0, le=1, description="in-distribution against foreign, by the score")
    foreign_accepted: float = Field(ge=0, le=1, description="share of foreign photos accepted")
    n_in: int = Field(ge=1)
    n_foreign: int = Field(ge=1)
    foreign: str = Field(description="which foreign photos (sources)")
    command: str


class RejectRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score: Score
    threshold: float
    accept: float = Field(0.95, gt=0, le=1, description="share of validation frames accepted")
    k: int = Field(10, ge=1, le=100, description="knn: which nearest neighbour counts")
    bank: str | None = Field(
        None, description="knn, oe: files role of the training frames' features"
    )
    detector: str | None = Field(None, description="oe: files role of the detector (JSON)")
    measured: RejectMeasured | None = None

    @model_serializer(mode="wrap")
    def _without_absent_detector(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A rule without a detector serialises as before the field existed, so the ids of heads
        # sealed then (their JSON hashed) stay what they were.
        out: dict[str, Any] = handler(self)
        if out.get("detector", 1) is None:
            del out["detector"]
        return out


class EmbeddedHead(BaseModel):
    """A bundle's own classifier seen as a head: its name and, once measured, its reject rule."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    reject: RejectRule | None = None


def familiar_features(latent: np.ndarray, head_features: np.ndarray | None) -> np.ndarray:
    """What ``knn`` compares, (N, D) float32: each block L2-normalised, so neither dominates."""
    n = len(latent)
    flat = latent.reshape(n, latent.shape[1], -1)
    blocks = [np.concatenate([flat.mean(axis=2), flat.std(axis=2)], axis=1)]
    if head_features is not None:
        blocks.insert(0, head_features.reshape(n, -1))
    unit = [b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-9) for b in blocks]
    return np.concatenate(unit, axis=1).astype(np.float32)


def load_bank(path: Path) -> np.ndarray:
    """A head's bank of (M, D) float16 features, its shape checked before its data is read."""
    with path.open("rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(f)
    if dtype != np.float16 or len(shape) != 2 or not (1 <= shape[0] <= MAX_BANK):
        raise ValueError(f"{path}: a bank is (M <= {MAX_BANK}, D) float16, not {shape} {dtype}")
    if not 1 <= shape[1] <= MAX_FEATURES:
        raise ValueError(f"{path}: {shape[1]} features, at most {MAX_FEATURES}")
    bank: np.ndarray = np.load(path, allow_pickle=False).astype(np.float32)
    return bank


def knn_score(features: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """The similarity of each of N frames to its ``k``-th nearest frame in ``bank``: (N,)."""
    sims = features @ bank.T  # (N, M)
    k = min(k, bank.shape[0])
    kth: np.ndarray = -np.partition(-sims, k - 1, axis=1)[:, k - 1]
    return kth


def prototypes(features: np.ndarray, n: int, seed: int = 0, rounds: int = 30) -> np.ndarray:
    """``n`` spherical k-means centroids of unit-block ``features`` (``familiar_features``)."""
    rng = np.random.default_rng(seed)
    centres = features[rng.choice(len(features), min(n, len(features)), replace=False)].copy()
    for _ in range(rounds):
        nearest = (features @ centres.T).argmax(axis=1)
        for j in range(len(centres)):
            members = features[nearest == j]
            if len(members):
                centres[j] = members.mean(axis=0)
    return centres


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    probs: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return probs


def scores(
    rule: RejectRule,
    logits: np.ndarray,
    features: np.ndarray | None = None,
    bank: np.ndarray | None = None,
) -> np.ndarray:
    """The familiarity score of each of N frames (higher: more like the head's training data);
    ``features`` are ``familiar_features``'s, needed by ``knn`` only."""
    return score_by(rule.score, logits, features, bank, rule.k)


def score_by(
    kind: Score,
    logits: np.ndarray,
    features: np.ndarray | None = None,
    bank: np.ndarray | None = None,
    k: int = 10,
) -> np.ndarray:
    if kind == "max_softmax":
        top: np.ndarray = softmax(logits).max(axis=-1)
        return top
    if kind == "energy":
        m = logits.max(axis=-1)
        lse: np.ndarray = m + np.log(np.exp(logits - m[:, None]).sum(axis=-1))
        return lse
    if kind == "oe":
        raise ValueError("the oe score is shared.reject_oe.oe_score's: it needs its detector")
    if features is None or bank is None:
        raise ValueError("the knn score needs the frames' features and the head's bank")
    return knn_score(features, bank, k)


def threshold_for(in_scores: np.ndarray, accept: float) -> float:
    """The score at or above which (at least) ``accept`` of the in-distribution frames fall."""
    ordered = np.sort(in_scores)
    return float(ordered[int(np.floor((1 - accept) * len(ordered) + 1e-9))])


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Probability that an in-distribution frame scores above a foreign one (ties count half)."""
    both = np.concatenate([in_scores, out_scores])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    sorted_scores = both[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    n_in, n_out = len(in_scores), len(out_scores)
    return float((ranks[:n_in].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out))
