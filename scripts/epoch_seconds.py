"""Seconds per epoch of a spic-train run, from its progress bars (the run's stderr, saved to a log).

    python scripts/epoch_seconds.py runs/spic-imagenette-cpu.log

The checkpoint records the whole run's wall time; this splits it by epoch, so epochs slowed by
other work on the same cores can be told from the rest. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("log", type=Path, help="spic-train's stderr, saved")
    text = ap.parse_args().log.read_text().replace("\r", "\n")
    seconds: dict[int, int] = {}
    # The last bar of an epoch reads "epoch E/N: 100%|...| S/S [MM:SS<00:00, ...]".
    for m in re.finditer(r"epoch (\d+)/\d+: 100%\|[^|]*\| (\d+)/\2 \[(\d+):(\d+)<", text):
        seconds[int(m.group(1))] = int(m.group(3)) * 60 + int(m.group(4))
    print(json.dumps({"epoch_seconds": seconds, "total": sum(seconds.values())}))


if __name__ == "__main__":
    main()
