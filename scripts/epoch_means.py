"""Per-epoch means of a training run's logged steps: the figures docs/research/training-log.md quotes
from runs' logs (α, the rate at the target QF, cross-entropy, batch accuracy, feature term).

    python scripts/epoch_means.py runs/split-fd [--from 8]

Epochs are counted from 1, as the progress bar and the validation passes count them.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

KEYS = ("alpha", "bpp_target_qf", "ce", "acc", "feature_distill")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a spic-train --out folder")
    ap.add_argument("--from", dest="first", type=int, default=1, help="first epoch to print")
    args = ap.parse_args()
    steps: dict[int, list[dict]] = defaultdict(list)
    for line in (args.run / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "step" in record:
            steps[record["epoch"] + 1].append(record)
    for epoch in sorted(e for e in steps if e >= args.first):
        rows = steps[epoch]
        means = {k: round(sum(r[k] for r in rows) / len(rows), 3) for k in KEYS if k in rows[0]}
        print(json.dumps({"epoch": epoch, **means}))


if __name__ == "__main__":
    main()
