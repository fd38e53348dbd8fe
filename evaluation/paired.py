"""Compare two bundles' spic-card results image by image (McNemar's exact test).

    python -m evaluation.paired A/eval.json B/eval.json   # bundle B against bundle A, per setting

The program only; the comparison is the library ``evaluation.pairs``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from evaluation.pairs import compare_cards, load_card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.paired",
        description="Compare two bundles' spic-card results image by image (McNemar).",
    )
    p.add_argument("a", type=Path, help="the baseline's eval.json")
    p.add_argument("b", type=Path, help="the candidate's eval.json")
    args = p.parse_args(argv)
    cards = [load_card(path) for path in (args.a, args.b)]
    try:
        rows = compare_cards(*cards)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    for r in rows:
        print(
            f"{r['setting']:>12} {r['codec']:<13} {r['classifier']:<26} "
            f"{100 * r['top1_a']:6.2f}% -> {100 * r['top1_b']:6.2f}%  {r['delta_points']:+.2f} "
            f"(+{r['gained']} -{r['lost']}, p={r['p_value']:.2g})"
        )
    summary = {"a": cards[0].get("model_id"), "b": cards[1].get("model_id"), "rows": rows}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
