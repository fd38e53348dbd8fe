"""Results-store benchmark: what storing every frame costs, and how the query API holds up at a
million stored frames on SQLite and on PostgreSQL.

    .venv/bin/python bench/store.py [--rows 1000000] [--seconds 8] [--queries 300]

1. Classify throughput at 32 clients (bench/loadgen.py) with the store on and off, same run:
   the cost of keeping every frame is 1 - on/off.
2. For each engine: ``--rows`` frames written straight into a store (bulk insert: 10 cameras,
   10 labels, one frame a second), then a real service on it answers ``GET /v1/frames`` for the
   newest page, a camera, a label, and a page deep in the past reached through its cursor; p50
   and p99 of ``--queries`` sequential requests each.

PostgreSQL runs from the system's binaries as an unprivileged user in a temporary folder, as the
tests do. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from bench.loadgen import closed_loop  # noqa: E402
from bench.store_rows import fill  # noqa: E402
from cloud_service.cluster import PostgresServer  # noqa: E402
from cloud_service.harness import running_cloud  # noqa: E402
from cloud_service.results import encode_cursor, open_store  # noqa: E402
from edge_client.encoder import EdgeEncoder  # noqa: E402
from evaluation.samples import sample_images  # noqa: E402
from shared.bundles import DEFAULT_BUNDLE  # noqa: E402


def classify_cost(frames: list[bytes], seconds: float) -> dict[str, object]:
    out: dict[str, object] = {}
    for store in (False, True):
        with (
            tempfile.TemporaryDirectory() as data,
            running_cloud([DEFAULT_BUNDLE], store_results=store, data_dir=data) as url,
        ):
            headers = {"Content-Type": "application/octet-stream", "X-Device-Id": "bench"}
            asyncio.run(closed_loop(url + "/v1/classify", frames, headers, 8, 2))  # warm-up
            result = asyncio.run(closed_loop(url + "/v1/classify", frames, headers, 32, seconds))
            out["store_on" if store else "store_off"] = result.summary()
    on, off = out["store_on"], out["store_off"]
    assert isinstance(on, dict) and isinstance(off, dict)
    out["store_cost"] = round(1 - float(on["req_s"]) / float(off["req_s"]), 3)
    return out


def query_latency(url: str, rows: int, queries: int) -> dict[str, object]:
    end = int(time.time() * 1e6)
    deep = encode_cursor(end - (rows // 2) * 1_000_000, rows // 2)  # half-way back in time
    cases = {
        "newest": {"limit": "50"},
        "camera": {"device": "cam-3", "limit": "50"},
        "label": {"label": "church", "min_confidence": "0.7", "limit": "50"},
        "deep_cursor": {"limit": "50", "cursor": deep},
    }
    out: dict[str, object] = {}
    with httpx.Client(timeout=30) as client:
        for name, params in cases.items():
            times = []
            for _ in range(queries):
                t0 = time.perf_counter()
                r = client.get(url + "/v1/frames", params=params)
                times.append(time.perf_counter() - t0)
                assert r.status_code == 200 and len(r.json()["frames"]) == 50, r.text[:200]
            ms = np.array(times) * 1e3
            p50, p99 = (round(float(np.percentile(ms, q)), 2) for q in (50, 99))
            out[name] = {"p50_ms": p50, "p99_ms": p99}
            print(f"  {name:12s} p50 {p50} ms  p99 {p99} ms", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    encoder = EdgeEncoder(DEFAULT_BUNDLE, cache_dir=False)
    frames = [encoder.encode(im) for im in sample_images(None)]
    result: dict[str, object] = {"benchmark": "store", "rows": args.rows, "cores": os.cpu_count()}
    print("classify at 32 clients, store off and on:", flush=True)
    result["classify"] = classify_cost(frames, args.seconds)
    print(f"  {result['classify']}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="spic-bench-store-", dir="/tmp"))
    server = None
    try:
        for engine in ("sqlite", "postgresql"):
            if engine == "sqlite":
                url_db, data_dir = "", root / "sqlite"
            else:
                server = PostgresServer(fsync=True)  # durable commits, as in production
                url_db, data_dir = server.new_database(), root / "unused"
            store = open_store(url_db, data_dir)
            t0 = time.perf_counter()
            fill(store.db, args.rows, frames[0])
            fill_s = time.perf_counter() - t0
            store.close()
            print(
                f"{engine}: {args.rows} rows written in {fill_s:.1f} s; GET /v1/frames:", flush=True
            )
            with running_cloud([DEFAULT_BUNDLE], database_url=url_db, data_dir=data_dir) as url:
                result[engine] = {
                    "fill_s": round(fill_s, 1),
                    **query_latency(url, args.rows, args.queries),
                }
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
