"""Two classifications of the same images, compared image by image (McNemar's exact test).

Two settings of one bundle (QF 4 and QF 8, say) read the same 1978 images, so their top-1 differ
only through the images one gets right and the other wrong: the discordant pairs. Under "no
difference" each discordant image is as likely to fall either way, so the count gained is
Binomial(gained + lost, 1/2); its exact two-sided p-value says whether a step of the ladder moved
top-1 more than the images can resolve. A card's "falls at QF4 → QF8" by 5 images of 1978 reads
differently at p = 0.6 than at p = 0.001.

A setting's per-image outcomes travel as a string of ``0``/``1`` in image order (``Row.hits``), so
``eval.json`` keeps them and any two rows measured on the same images can be compared later.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scipy.stats import binomtest


def hits_string(correct: Iterable[bool]) -> str:
    return "".join("1" if c else "0" for c in correct)


@dataclass(frozen=True)
class PairedDiff:
    gained: int  # images right in b and wrong in a
    lost: int  # images right in a and wrong in b
    n: int  # images compared

    @property
    def delta_points(self) -> float:
        """b's top-1 minus a's, in percentage points."""
        return 100 * (self.gained - self.lost) / self.n

    @property
    def p_value(self) -> float:
        """Exact two-sided McNemar p-value (1.0 when no image differs)."""
        discordant = self.gained + self.lost
        if discordant == 0:
            return 1.0
        return float(binomtest(self.gained, discordant, 0.5).pvalue)

    def describe(self) -> str:
        return (
            f"{self.delta_points:+.2f} points: {self.gained} images gained, {self.lost} lost, "
            f"McNemar p = {self.p_value:.2g}"
        )


def paired(a: str, b: str) -> PairedDiff:
    """Compare two ``hits`` strings of the same images in the same order."""
    if len(a) != len(b) or not a:
        raise ValueError(f"outcomes of {len(a)} and {len(b)} images cannot be paired")
    gained = sum(1 for x, y in zip(a, b, strict=True) if x == "0" and y == "1")
    lost = sum(1 for x, y in zip(a, b, strict=True) if x == "1" and y == "0")
    return PairedDiff(gained, lost, len(a))


def compare_cards(a: dict, b: dict) -> list[dict]:
    """Per setting both ``spic-card`` results (``eval.json``) measured, b against a."""
    if (a.get("dataset"), _n(a)) != (b.get("dataset"), _n(b)):
        raise ValueError(
            f"{a.get('dataset')} ({_n(a)} images) and {b.get('dataset')} ({_n(b)} images) "
            "are not the same images"
        )
    theirs = {_key(r): r for r in b["rows"] if r.get("hits")}
    out = []
    for r in a["rows"]:
        other = theirs.get(_key(r))
        if not r.get("hits") or other is None:
            continue
        d = paired(r["hits"], other["hits"])
        out.append(
            {
                "setting": r["setting"],
                "codec": r["codec"],
                "classifier": r["classifier"],
                "top1_a": r["top1"],
                "top1_b": other["top1"],
                "bpp_a": r["bpp"],
                "bpp_b": other["bpp"],
                "delta_points": round(d.delta_points, 2),
                "gained": d.gained,
                "lost": d.lost,
                "p_value": d.p_value,
            }
        )
    return out


def _n(card: dict) -> int:
    return max(int(r["n_images"]) for r in card["rows"])


def _key(row: dict) -> tuple[str, str, str]:
    return row["setting"], row["codec"], row["classifier"]
