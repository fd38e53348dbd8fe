"""Two classifications of the same images, compared image by image (McNemar's exact test).

Two settings of one bundle (QF 4 and QF 8, say) read the same 1978 images, so their top-1 differ
only through the images one gets right and the other wrong: the discordant pairs. Under "no
difference" each discordant image is as likely to fall either way, so the count gained is
Binomial(gained + lost, 1/2); its exact two-sided p-value says whether a step of the ladder moved
top-1 more than the images can resolve. A card's "falls at QF4 → QF8" by 5 images of 1978 reads
differently at p = 0.6 than at p = 0.001.

A setting's per-image outcomes travel as a string of ``0``/``1`` in image order (``Row.hits``), so
``eval.json`` keeps them and any two rows measured on the same images can be compared later. The
file keeps them packed (``hits_hex``: four images a hex digit, a quarter of the bytes; a bundle's
eval.json is part of the tracked tree); ``load_card`` unpacks them, and reads files that kept the
plain string too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import binomtest


def hits_string(correct: Iterable[bool]) -> str:
    return "".join("1" if c else "0" for c in correct)


def pack_hits(hits: str) -> str:
    """``hits`` as hex digits, four images each, the last padded with 0s."""
    if not hits:
        return ""
    padded = hits + "0" * (-len(hits) % 4)
    return "".join(f"{int(padded[i : i + 4], 2):x}" for i in range(0, len(padded), 4))


def unpack_hits(packed: str, n: int) -> str:
    """``pack_hits``' inverse for ``n`` images; ValueError when the digits do not fit ``n``."""
    if len(packed) != -(-n // 4):
        raise ValueError(f"{len(packed)} hex digits cannot hold the outcomes of {n} images")
    return "".join(f"{int(d, 16):04b}" for d in packed)[:n]


def card_rows(rows: list[dict]) -> list[dict]:
    """Rows as ``eval.json`` keeps them: ``hits`` packed into ``hits_hex``."""
    out = []
    for r in rows:
        r = dict(r)
        if r.get("hits"):
            r["hits_hex"] = pack_hits(r.pop("hits"))
        out.append(r)
    return out


def load_card(path: Path) -> dict:
    """An ``eval.json``, its rows' ``hits`` unpacked."""
    card: dict = json.loads(path.read_text())
    for r in card["rows"]:
        packed = r.pop("hits_hex", None)
        if packed is not None:
            r["hits"] = unpack_hits(packed, int(r["n_images"]))
    return card


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
