"""Scale-out benchmark: frames/s and p99 through nginx at 1, 2 and 3 replicas sharing PostgreSQL.

    .venv/bin/python bench/replicas.py [--seconds 10] [--concurrency 32] [--replicas 1 2 3]

Each configuration is the topology of docker-compose.yml as plain processes on 127.0.0.1
(cloud_service/cluster.py): a real PostgreSQL (shared idempotency and results store), N uvicorn
replicas and nginx. Closed-loop clients (bench/loadgen.py) send the edge's kind of request: a
frame with its own Idempotency-Key, so every request claims a key, is classified, is stored
and completes its key: three database round trips and one row.

In the same run:
* **baseline**: one replica on the single-host default (SQLite), no balancer; each row's
  ``vs_single_host_sqlite`` is its frames/s over this one's.
* **store write rate**: ``ResultsStore.add`` alone on PostgreSQL from 1, 2 and 4 threads: the
  database's capacity for rows, with no inference in the way. PostgreSQL runs with fsync on
  (durable commits) throughout, on this machine's disk.
* **CPU per frame**: CPU seconds of replicas, nginx and PostgreSQL over the frames they served, by
  process group. docs/deploy.md turns these into a capacity plan.

Everything shares this machine's cores (2 here), load generator included: more replicas than
cores cannot add throughput, and the numbers show how much each replica costs. The last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from PIL import Image  # noqa: E402

from bench import store_rows  # noqa: E402
from bench.loadgen import closed_loop  # noqa: E402
from cloud_service.cluster import PostgresServer, running_cluster  # noqa: E402
from cloud_service.harness import cloud_process  # noqa: E402
from cloud_service.results import FrameRecord, open_store  # noqa: E402
from edge_client.encoder import EdgeEncoder  # noqa: E402
from evaluation.samples import sample_images  # noqa: E402
from shared.bundles import DEFAULT_BUNDLE  # noqa: E402

HEADERS = {"Content-Type": "application/octet-stream"}


def _stat(pid: int) -> tuple[int, float]:
    """(parent pid, CPU seconds) of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and every live descendant (PostgreSQL's backends, nginx's worker)."""
    parents, cpu = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)], cpu[int(entry.name)] = _stat(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += [child for child, parent in parents.items() if parent == pid]
    return total


def load(url: str, frames: list[bytes], concurrency: int, seconds: float, tag: str) -> dict:
    result = asyncio.run(
        closed_loop(url, frames, HEADERS, concurrency, seconds, key_prefix=f"{tag}-{time.time()}")
    )
    return result.summary()


def frames_for_bench(count: int = 12) -> list[bytes]:
    images = sample_images(None)
    images += [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in images]
    encoder = EdgeEncoder(DEFAULT_BUNDLE, threads=1)
    return [encoder.encode(im) for im in images[:count]]


def store_write_rate(database_url: str, threads: int, seconds: float) -> float:
    """Rows/s that ``ResultsStore.add`` reaches from ``threads`` writers (one store, its pool)."""
    store = open_store(database_url, "unused")
    prediction = store_rows.prediction(500, 0.08, scores=5)
    frame = bytes(500)
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def writer(t: int) -> None:
        while time.perf_counter() < deadline:
            record = FrameRecord("cam", None, time.time_ns() // 1000, prediction)
            store.add(record, frame, f"bench-{t}-{counts[t]}-{deadline}")
            counts[t] += 1

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    rate = sum(counts) / (time.perf_counter() - start)
    store.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    args = ap.parse_args()
    frames = frames_for_bench()
    mean_bytes = float(np.mean([len(f) for f in frames]))
    settings: dict[str, object] = {"max_batch_size": 8}
    result: dict = {
        "benchmark": "replicas",
        "cores": os.cpu_count(),
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "mean_frame_bytes": round(mean_bytes, 1),
    }

    print("baseline: 1 replica, SQLite, no balancer", flush=True)
    with cloud_process([DEFAULT_BUNDLE], "warning", **settings) as (url, proc):
        cpu0 = tree_cpu_seconds(proc.pid)
        base = load(url + "/v1/classify", frames, args.concurrency, args.seconds, "base")
        base["cpu_ms_per_frame"] = round(
            (tree_cpu_seconds(proc.pid) - cpu0) * 1e3 / max(base["requests"], 1), 2
        )
    print(f"  {base}", flush=True)
    result["baseline_single_host_sqlite"] = base

    server = PostgresServer(fsync=True)  # durable commits, as in production
    rows = []
    try:
        for n in args.replicas:
            database_url = server.new_database()
            with running_cluster([DEFAULT_BUNDLE], database_url, replicas=n, **settings) as c:
                pg_root = server.proc.pid if server.proc else 0
                groups = {
                    "replicas": [p.pid for p in c.replicas],
                    "nginx": [c.balancer_pid],
                    "postgres": [pg_root],
                }
                before = {g: sum(map(tree_cpu_seconds, pids)) for g, pids in groups.items()}
                row = load(c.url + "/v1/classify", frames, args.concurrency, args.seconds, f"r{n}")
                after = {g: sum(map(tree_cpu_seconds, pids)) for g, pids in groups.items()}
            with psycopg.connect(database_url) as conn:
                (stored,) = conn.execute("SELECT COUNT(*) FROM frames").fetchone() or (0,)
                # On-disk bytes per row, indexes and TOAST included: what a day of frames costs.
                sizes = conn.execute(
                    "SELECT pg_total_relation_size('frames')::float / GREATEST(COUNT(*), 1), "
                    "(SELECT pg_total_relation_size('idempotency')::float / GREATEST(COUNT(*), 1) "
                    "FROM idempotency) FROM frames"
                ).fetchone()
                assert sizes is not None
                frame_row, key_row = sizes
            served = max(row["requests"], 1)
            row.update(
                {
                    "replicas": n,
                    "rows_stored": stored,
                    "db_rows_per_s": round(stored / args.seconds, 1),
                    "bytes_per_frame_row": round(frame_row),
                    "bytes_per_idempotency_row": round(key_row),
                    "vs_single_host_sqlite": round(row["req_s"] / max(base["req_s"], 1e-9), 2),
                    "cpu_ms_per_frame": {
                        g: round((after[g] - before[g]) * 1e3 / served, 2) for g in groups
                    },
                }
            )
            rows.append(row)
            print(f"  {n} replica(s): {row}", flush=True)
        result["through_nginx_postgres"] = rows
        writes = {}
        for threads in (1, 2, 4):
            writes[str(threads)] = round(store_write_rate(server.new_database(), threads, 5), 1)
            print(f"  store alone, {threads} writer thread(s): {writes[str(threads)]} rows/s")
        result["store_rows_per_s_by_writer_threads"] = writes
    finally:
        server.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
