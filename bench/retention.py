"""Retention benchmark: how long classify waits while a retention pass deletes old frames.

    .venv/bin/python bench/retention.py [--rows 300000] [--reason age|size]

A real service on SQLite with an empty store; ``--rows`` frames one second apart, ending now,
are then written straight into its file (as bench/store.py does), and its next retention pass
(by age: all but the last second; by size: all but 1 kB of frame bytes) deletes them while one
client classifies a frame after another. Printed: how long after the rows were in the last of them
was counted removed, classify p50 and max meanwhile, and how many times
``spic_frames_removed_total`` moved. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from bench.store_rows import fill  # noqa: E402
from cloud_service.harness import running_cloud  # noqa: E402
from cloud_service.results import open_store  # noqa: E402
from edge_client.encoder import EdgeEncoder  # noqa: E402
from evaluation.samples import sample_images  # noqa: E402
from shared.bundles import DEFAULT_BUNDLE  # noqa: E402


def removed(client: httpx.Client, url: str, reason: str) -> float:
    for line in client.get(url + "/metrics").text.splitlines():
        if line.startswith(f'spic_frames_removed_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--reason", choices=("age", "size"), default="age")
    args = ap.parse_args()
    frame = EdgeEncoder(DEFAULT_BUNDLE, cache_dir=False).encode(next(iter(sample_images(None))))
    rule = dict(retention_days=1 / 86400, retention_mb=0)  # older than 1 s
    if args.reason == "size":
        rule = dict(retention_days=0, retention_mb=1 / 1024)  # 1 kB: about one frame
    headers = {"Content-Type": "application/octet-stream"}
    with (
        tempfile.TemporaryDirectory(prefix="spic-bench-retention-") as data,
        running_cloud([DEFAULT_BUNDLE], data_dir=data, retention_interval_s=3, **rule) as url,
        httpx.Client(timeout=120) as client,
    ):
        store = open_store("", data)
        fill(store.db, args.rows, frame)
        store.close()
        # From the moment the rows are in until the pass has removed them: the next pass starts
        # within retention_interval_s, and a stall shows in the classify times wherever it falls.
        latencies, moves, seen, start = [], 0, 0.0, time.monotonic()
        while seen < args.rows - 10 and time.monotonic() < start + 1800:  # the newest may stay
            t0 = time.perf_counter()
            assert client.post(url + "/v1/classify", content=frame, headers=headers).is_success
            latencies.append(time.perf_counter() - t0)
            now = removed(client, url, args.reason)
            moves, seen = moves + (now > seen), max(seen, now)
        ms = np.array(latencies) * 1e3
        result = {
            "benchmark": "retention",
            "reason": args.reason,
            "rows": args.rows,
            "cores": os.cpu_count(),
            "removed": seen,
            "done_after_s": round(time.monotonic() - start, 1),
            "classify_p50_ms": round(float(np.percentile(ms, 50)), 1),
            "classify_max_ms": round(float(ms.max()), 1),
            "counter_moves": moves,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
