"""Unbounded reads against uploads (issue 34, item 14): ten years of stored frames on SQLite, the
query API's heaviest reads, and what a camera's classify waits meanwhile.

    .venv/bin/python bench/query_reads.py [--rows 1000000] [--years 10] [--chart-bucket auto]

1. ``--rows`` frames written straight into a SQLite store, spread evenly over ``--years`` (20
   cameras, 10 labels), then a real service on it (the shipped bundle).
2. ``GET /v1/stats?bucket=1m`` over everything, and the dashboard's default chart query
   (``group_by=label&bucket=--chart-bucket``; ``1h`` was the dashboard's default before
   ``auto``): status, seconds, bytes of JSON, and the server's peak memory (VmHWM) before and
   after.
3. Classify latency (sequential, one client) alone, then while another client repeats a
   ``min_confidence=0.999999`` page (no frame qualifies: the read walks the whole index).

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from bench.store_rows import fill  # noqa: E402
from cloud_service.harness import cloud_process  # noqa: E402
from cloud_service.results import open_store  # noqa: E402
from edge_client.encoder import EdgeEncoder  # noqa: E402
from evaluation.samples import sample_images  # noqa: E402
from shared.bundles import DEFAULT_BUNDLE  # noqa: E402


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def timed_get(url: str, params: dict[str, str]) -> dict[str, object]:
    t0 = time.perf_counter()
    r = httpx.get(url, params=params, timeout=120)
    return {
        "status": r.status_code,
        "s": round(time.perf_counter() - t0, 3),
        "json_bytes": len(r.content),
    }


def classify_ms(url: str, frames: list[bytes], seconds: float) -> list[float]:
    headers = {"Content-Type": "application/octet-stream", "X-Device-Id": "bench"}
    out: list[float] = []
    end = time.time() + seconds
    with httpx.Client(timeout=60) as client:
        while time.time() < end:
            t0 = time.perf_counter()
            r = client.post(url + "/v1/classify", content=frames[len(out) % len(frames)],
                            headers=headers)  # fmt: skip
            assert r.status_code == 200, r.text[:200]
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    a = np.array(ms)
    return {
        "n": len(a),
        "p50_ms": round(float(np.median(a)), 1),
        "max_ms": round(float(a.max()), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--years", type=float, default=10)
    ap.add_argument("--chart-bucket", default="auto")
    ap.add_argument("--seconds", type=float, default=6)
    args = ap.parse_args()
    encoder = EdgeEncoder(DEFAULT_BUNDLE, cache_dir=False)
    frames = [encoder.encode(im) for im in sample_images(None)]
    result: dict[str, object] = {"benchmark": "query_reads", "rows": args.rows, "years": args.years}
    with tempfile.TemporaryDirectory(prefix="spic-bench-reads-") as data:
        t0 = time.perf_counter()
        store = open_store("", Path(data))
        step_s = args.years * 365 * 86400 / args.rows  # evenly over the years, ending now
        fill(store.db, args.rows, frames[0], step_s, cameras=20, model_id="bench", jitter_s=100)
        store.close()
        result["fill_s"] = round(time.perf_counter() - t0, 1)
        with cloud_process([DEFAULT_BUNDLE], data_dir=data) as (url, proc):
            before = peak_mb(proc.pid)
            result["stats_1m"] = timed_get(url + "/v1/stats", {"bucket": "1m"})
            chart = {"group_by": "label", "bucket": args.chart_bucket}
            result["dashboard_chart"] = timed_get(url + "/v1/stats", chart)
            result["peak_mb"] = {"before": before, "after": peak_mb(proc.pid)}
            classify_ms(url, frames, 1)  # warm-up
            result["classify_alone"] = summary(classify_ms(url, frames, args.seconds))
            stop, reads = threading.Event(), list[float]()

            def scan() -> None:
                with httpx.Client(timeout=120) as client:
                    while not stop.is_set():
                        t = time.perf_counter()
                        client.get(url + "/v1/frames", params={"min_confidence": "0.999999"})
                        reads.append((time.perf_counter() - t) * 1e3)

            reader = threading.Thread(target=scan)
            reader.start()
            try:
                result["classify_during_scans"] = summary(classify_ms(url, frames, args.seconds))
            finally:
                stop.set()
                reader.join()
            result["scan"] = summary(reads)
            for key, value in result.items():
                print(f"  {key}: {value}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
