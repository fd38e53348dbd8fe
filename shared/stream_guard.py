"""The semantic guard of a stream: send only the changes that move the answer.

A lossless delta sends every symbol that changed since the frame the cloud holds; on a busy
scene most of them are the flicker of values near a quantization boundary, and coding which ones
flickered costs most of a delta's bytes. The guard, on the edge, tries cheaper targets first and
keeps the first one on which the codec's own classifier (its default head: the most probable
class, and "unknown" where the head has a reject rule) gives the answer it gives on the frame's
exact symbols; if none does, the frame is sent exactly. So every frame of a guarded stream gets,
from a cloud that serves the same head, the answer of the same frame coded alone, at the bytes
of the cheapest target that keeps it. The price is the classifier on the edge: one run on the
exact symbols and one per target tried (``SemanticGuard.runs``), each as dear as the encoder
itself; a target that keeps everything the cloud holds (a skip) is answered from the last
frame's run.

A target keeps, at each symbol, what the cloud holds unless the encoder's value ``y · QF`` has
left that symbol's quantization cell by more than ``margin`` (a dead zone in time: a value
hovering at a boundary is not re-sent), then drops the latent positions where fewer than
``positions`` channels changed. ``TARGETS`` goes from the cheapest to the dearest; the exact
symbols come last.

Heads added on the cloud after the camera shipped read the guarded latent too, but the guard
checks only the head the camera carries: their answers may differ from the frames coded alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from shared.quantize import quantize
from shared.runtime import SpicCodec

# (margin in quantization steps beyond the cell's half-width, channels a position must change in),
# from the cheapest target to the dearest. The first sends only values that moved 2.5 steps, at
# positions where 3 channels did; the last drops only flicker within 0.1 step of a boundary.
# Chosen by bytes on the six clips of bench/streams.py among a few ladders of 3-5 targets (a
# wide first dead zone mattered most; the answers are the same whatever the ladder): the first
# target keeps the answer on most frames, so a frame costs 1.2-1.6 classifier runs there.
TARGETS: tuple[tuple[float, int], ...] = ((2.0, 3), (0.5, 2), (0.1, 1))

# latents (N, C, h, w) -> one answer per latent, compared for equality only
Answers = Callable[[np.ndarray], np.ndarray]


def target(y: np.ndarray, held: np.ndarray, qf: int, margin: float, positions: int) -> np.ndarray:
    """The symbols of one target: ``held`` where ``y`` stays within its cell widened by
    ``margin``, the exact symbol elsewhere, then only at positions where at least ``positions``
    channels differ from ``held``."""
    exact = quantize(y, qf)
    moved = np.abs(y.astype(np.float32) * np.float32(qf) - held) > 0.5 + margin
    out = np.where(moved, exact, held)
    if positions > 1:
        keep = (out != held).sum(0) >= positions
        out = np.where(keep[None], out, held)
    result: np.ndarray = out.astype(held.dtype)
    return result


@dataclass
class SemanticGuard:
    """Chooses, per frame, the cheapest target whose answer is the exact frame's.

    ``answers`` runs the classifier; ``to_latent`` turns symbols into what it reads (the
    dequantized latent). Counts what it did, for the edge's summary and the benchmark."""

    answers: Answers
    to_latent: Callable[[np.ndarray], np.ndarray]
    targets: tuple[tuple[float, int], ...] = TARGETS
    runs: int = 0  # classifier runs
    chosen: dict[str, int] = field(default_factory=dict)  # frames per target ("exact" too)
    # The symbols last chosen and their answer: what the cloud will hold next, so a target that
    # keeps all of it (a skip, the commonest choice) needs no run of its own.
    _known: tuple[bytes, int] | None = None

    def choose(
        self, y: np.ndarray, exact: np.ndarray, held: np.ndarray | None, qf: int
    ) -> np.ndarray:
        """The symbols to send for a frame whose encoder output is ``y`` (base channels, as
        ``exact`` holds them), when the cloud holds ``held`` (None: a key frame, sent exact)."""
        if held is None or held.shape != exact.shape or np.array_equal(held, exact):
            return exact
        want = self._answer(exact)
        tried: set[bytes] = set()
        for margin, positions in self.targets:
            out = target(y[: exact.shape[0]], held, qf, margin, positions)
            key = out.tobytes()
            if key in tried or np.array_equal(out, exact):
                continue  # the same target as one tried, or no cheaper than the exact frame
            tried.add(key)
            if self._answer(out) == want:
                self._count(f"{margin:g}/{positions}")
                self._known = key, want
                return out
        self._count("exact")
        self._known = exact.tobytes(), want
        return exact

    def _answer(self, symbols: np.ndarray) -> int:
        if self._known is not None and self._known[0] == symbols.tobytes():
            return self._known[1]
        self.runs += 1
        return int(self.answers(self.to_latent(symbols)[None])[0])

    def _count(self, name: str) -> None:
        self.chosen[name] = self.chosen.get(name, 0) + 1


def guard_for(codec: SpicCodec, qf: int) -> SemanticGuard | None:
    """The guard of ``codec``'s default head for frames made at ``qf``; None where a frame at
    ``qf`` carries an enhancement layer (its symbols are not the base latent's alone)."""
    m = codec.manifest
    if m.channels_at(qf) > m.latent.channels:
        return None
    head = codec.default_head

    def answers(latents: np.ndarray) -> np.ndarray:
        got = codec.classify(latents, [head])[head]
        # the most probable class (the answer names it even when unknown) and the verdict
        labels: np.ndarray = 2 * got.probs.argmax(1) + got.unknown.astype(int)
        return labels

    return SemanticGuard(answers, lambda symbols: m.dequantize_latent(symbols, qf))
