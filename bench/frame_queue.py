"""Frame-queue benchmark: does capturing a frame stay as cheap with 100,000 frames waiting?

    .venv/bin/python bench/frame_queue.py [--sizes 100 10000 100000] [--puts 200]

For each size, a queue folder is filled with that many frames (written directly, without fsync,
to keep the set-up short), opened once (the only folder scan), and then ``--puts`` frames are
captured through ``FrameQueue.put`` (fsynced, as in the field) and as many acknowledged. Reports
the open time and p50/p99 of put and ack per size, and the ratio of the largest queue's put p50
to the smallest's (the baseline in the same run; 1.0 means the cost does not grow with depth).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edge_client.frame_queue import SUFFIX, FrameQueue  # noqa: E402

FRAME = bytes(554)  # the shipped bundle's mean 224² frame at QF16


def fill(root: Path, n: int) -> None:
    now = time.time()
    for seq in range(1, n + 1):
        meta = json.dumps({"key": f"k{seq}", "source": f"img{seq}.jpg", "captured": now})
        (root / f"{seq:012d}{SUFFIX}").write_bytes(meta.encode() + b"\n" + FRAME)


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1e3, 4)


def measure(n: int, puts: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="spic-queue-") as tmp:
        root = Path(tmp)
        fill(root, n)
        t0 = time.perf_counter()
        queue = FrameQueue(root, max_bytes=1 << 40)
        open_s = time.perf_counter() - t0
        put_s, ack_s = [], []
        for i in range(puts):
            t = time.perf_counter()
            item = queue.put(FRAME, key=f"new{i}", source=f"new{i}.jpg")
            put_s.append(time.perf_counter() - t)
            oldest = queue.oldest()
            assert oldest is not None and oldest.seq != item.seq
            t = time.perf_counter()
            queue.ack(oldest)
            ack_s.append(time.perf_counter() - t)
        assert len(queue) == n
    return {
        "frames": n,
        "open_s": round(open_s, 3),
        "put_p50_ms": pct(put_s, 50),
        "put_p99_ms": pct(put_s, 99),
        "ack_p50_ms": pct(ack_s, 50),
        "ack_p99_ms": pct(ack_s, 99),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000, 100_000])
    ap.add_argument("--puts", type=int, default=200)
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        row = measure(n, args.puts)
        rows.append(row)
        print(
            f"{n:7d} frames: open {row['open_s']} s, put p50 {row['put_p50_ms']} ms "
            f"p99 {row['put_p99_ms']} ms, ack p50 {row['ack_p50_ms']} ms",
            flush=True,
        )
    ratio = rows[-1]["put_p50_ms"] / rows[0]["put_p50_ms"]
    print(
        json.dumps(
            {
                "benchmark": "frame_queue",
                "puts": args.puts,
                "rows": rows,
                "put_p50_ratio_largest_over_smallest": round(ratio, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
