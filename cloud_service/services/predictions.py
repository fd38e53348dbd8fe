"""Every head of a codec on a batch of latents, and their answers as the API writes them.

The classify batcher of a codec runs ``run_heads``: each head the codec serves, on the whole
batch, one row per frame. An answer then takes the heads its request asked for (``?heads=``),
the results store keeps them all. The heads are read once per batch: a head added or replaced
while a batch runs answers from the next batch on, and a frame's rows all come from the heads
of one moment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from cloud_service.problems import Problem
from shared.heads import Head
from shared.runtime import SpicCodec
from shared.schemas import ClassScore, HeadPrediction

log = logging.getLogger("spic.cloud.heads")
ALL = "all"


@dataclass(frozen=True)
class HeadRow:
    """One head's answer for one frame."""

    head: Head
    probs: np.ndarray  # (K,)
    unknown: bool
    score: float | None


FrameRows = dict[str, HeadRow]  # head name -> its answer for the frame


def run_heads(runtime: SpicCodec, latents: np.ndarray) -> list[FrameRows]:
    """(N, C, h, w) latents -> per frame, every head's answer. A head that fails is left out of
    the rows (and logged), so one broken head added at run time cannot fail the others; the
    default head failing fails the batch."""
    if not runtime.heads:
        runtime.load_heads()
    heads = runtime.heads  # one snapshot: add_head swaps the dict, never mutates it
    base = latents[:, : runtime.manifest.latent.channels].astype(np.float32)
    answers = {}
    for name, head in heads.items():
        try:
            answers[name] = (head, head.run(base))
        except Exception as exc:
            if name == runtime.default_head:
                raise
            log.error("head %s of codec %s failed on a batch: %r", name, runtime.model_id, exc)
    rows: list[FrameRows] = []
    for i in range(len(latents)):
        rows.append(
            {
                name: HeadRow(
                    head,
                    a.probs[i],
                    bool(a.unknown[i]),
                    None if a.score is None else float(a.score[i]),
                )
                for name, (head, a) in answers.items()
            }
        )
    return rows


def asked_heads(runtime: SpicCodec, asked: str | None) -> list[str] | None:
    """The head names ``?heads=`` asks for (``all``: every one served), None when not asked;
    422 naming the served heads for a head this codec does not serve."""
    if asked is None:
        return None
    served = list(runtime.heads)
    if asked.strip() == ALL:
        return served
    names = list(dict.fromkeys(n.strip() for n in asked.split(",") if n.strip()))
    unknown = [n for n in names if n not in runtime.heads]
    if unknown or not names:
        raise Problem(
            422,
            "unknown-head",
            "head not served for this codec",
            f"{', '.join(repr(n[:64]) for n in unknown[:5]) or 'no head named'}; codec "
            f"{runtime.model_id} serves: {', '.join(served)} (or ask for all)",
            unknown_heads=unknown[:20],
            served_heads=served,
        )
    return names


def top_scores(row: HeadRow, k: int) -> list[ClassScore]:
    order = np.argsort(-row.probs)[:k]
    labels = row.head.labels
    return [
        ClassScore(class_id=int(i), label=labels[i], confidence=float(row.probs[i])) for i in order
    ]


def head_prediction(row: HeadRow, k: int) -> HeadPrediction:
    top = top_scores(row, k)
    return HeadPrediction(
        head_id=row.head.head_id,
        label=None if row.unknown else top[0].label,
        confidence=top[0].confidence,
        unknown=row.unknown,
        score=row.score,
        top_k=top,
    )


def head_predictions(rows: FrameRows, names: list[str] | None, k: int) -> dict[str, HeadPrediction]:
    """The answers of ``names`` (every head's when None) that the rows hold."""
    chosen = rows if names is None else {n: rows[n] for n in names if n in rows}
    return {name: head_prediction(row, k) for name, row in chosen.items()}
