"""Scale-out: replicas share PostgreSQL, so any replica answers any retry, exactly once.

The topology of docker-compose.yml, as plain processes: a real PostgreSQL server, three real
uvicorn replicas and a real nginx in front (cloud_service/cluster.py).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
from PIL import Image

from cloud_service.cluster import nginx_config, running_cluster
from cloud_service.database import PostgresDatabase, StoreUnavailable
from cloud_service.harness import ROOT
from cloud_service.idempotency import Stored
from cloud_service.idempotency_sql import SqlIdempotencyStore
from cloud_service.problems import Problem
from edge_client.client import CloudClient, frame_key
from edge_client.encoder import EdgeEncoder


def test_one_replica_wins_a_key_claimed_by_many_at_once(postgres_server):
    """4 replicas x 2 request threads each claim the same key at once, for 10 keys: exactly one
    claim wins each key (two threads of one replica once both won: the stale-claim check raced
    the claim)."""
    url = postgres_server()
    replicas = [SqlIdempotencyStore(PostgresDatabase(url)) for _ in range(4)]
    for round_ in range(10):
        key = f"frame-{round_}"
        start = threading.Barrier(len(replicas) * 2)

        def claim(store: SqlIdempotencyStore, key: str = key, start=start) -> str:
            start.wait()
            try:
                return "won" if store.begin(key, b"body") is None else "replayed"
            except Problem as exc:
                return str(exc.status)

        with ThreadPoolExecutor(len(replicas) * 2) as pool:
            outcomes = list(pool.map(claim, replicas * 2))
        assert sorted(outcomes) == ["409"] * 7 + ["won"], (key, outcomes)
        winner = (replicas * 2)[outcomes.index("won")]
        winner.complete(key, Stored(200, b'{"label": "tench"}', "application/json"))
    for store in replicas:  # every replica now replays the stored answer
        replay = store.begin("frame-0", b"body")
        assert replay is not None and replay.body == b'{"label": "tench"}'
    with pytest.raises(Problem) as err:
        replicas[0].begin("frame-0", b"another body")
    assert err.value.status == 422
    for store in replicas:
        store.close()


def test_a_dead_replicas_claim_expires_after_its_lease(postgres_server):
    url = postgres_server()
    dead, alive = (SqlIdempotencyStore(PostgresDatabase(url), lease_s=5) for _ in range(2))
    assert dead.begin("k", b"x", now=1000.0) is None  # then its replica is killed
    with pytest.raises(Problem):
        alive.begin("k", b"x", now=1003.0)  # within the lease: 409, the edge retries
    assert alive.begin("k", b"x", now=1006.0) is None  # lease over: claimable
    dead.close()
    alive.close()


def test_on_postgresql_the_ttl_bounds_the_shared_table(postgres_server):
    store = SqlIdempotencyStore(PostgresDatabase(postgres_server()), ttl_s=60, max_entries=5)
    answer = Stored(200, b"{}", "application/json")
    for i, created in enumerate([time.time() - 120] * 10 + [None] * 10):
        assert store.begin(f"k{i}", b"x", now=created) is None
        store.complete(f"k{i}", answer)
    store.enforce_bounds()
    # The expired ten went by the TTL; the recent ten stay, though max_entries is 5: counting a
    # shared table of rate x TTL rows on every check would scan it (docs/deploy.md).
    assert len(store) == 10 and store.begin("k19", b"x") is not None
    store.close()


def test_a_database_restart_costs_a_503_then_nothing(postgres_running):
    server = postgres_running
    # A 1 s wait for a connection, not the 5 s default: the 503 comes as surely, sooner.
    store = SqlIdempotencyStore(PostgresDatabase(server.new_database(), timeout_s=1.0))
    assert store.begin("a", b"x") is None
    server.stop()
    with pytest.raises(StoreUnavailable):
        store.begin("b", b"x")
    server.start()
    assert store.begin("b", b"x") is None  # the pool replaced its broken connection
    store.close()


def test_the_compose_load_balancer_uses_the_same_rules():
    """docker/nginx.conf is nginx_config for the compose service names; regenerate it with
    ``python scripts/nginx_conf.py``, never by hand."""
    from cloud_service.cluster import compose_nginx_config

    assert (ROOT / "docker" / "nginx.conf").read_text() == compose_nginx_config()
    assert "non_idempotent" in nginx_config(["a:1"], "127.0.0.1:1")


@pytest.fixture(scope="module")
def frames(tiny_bundle: Path) -> list[bytes]:
    rng = np.random.default_rng(0)
    encoder = EdgeEncoder(tiny_bundle, cache_dir=False)
    images = (rng.integers(0, 255, (80, 96, 3), dtype=np.uint8) for _ in range(8))
    return [encoder.encode(Image.fromarray(image)) for image in images]


def test_replicas_behind_nginx_classify_every_frame_exactly_once(
    tiny_bundle, frames, postgres_running
):
    """Three edges stream through nginx; one replica is SIGKILLed mid-stream and PostgreSQL is
    restarted once. Every frame is answered, stored once and queryable through the balancer."""
    devices, per_device = 3, 40
    server = postgres_running
    database_url = server.new_database()
    settings = dict(api_keys="up", read_keys="read", idempotency_lease_s=3)
    with running_cluster([tiny_bundle], database_url, replicas=3, **settings) as cluster:
        sent = threading.Event()
        progress = [0] * devices

        def edge(device: int) -> list[dict]:
            client = CloudClient(
                cluster.url,
                api_key="up",
                device_id=f"cam-{device}",
                max_retries=40,  # the edge's queue would keep the frame; here, keep trying
                backoff_base=0.05,
                backoff_cap=1.0,
            )
            answers = []
            try:
                for i in range(per_device):
                    frame = frames[(device + i) % len(frames)]
                    key = frame_key(f"cam-{device}", f"{i:04d}.jpg", frame)
                    answers.append(client.classify(frame, key))
                    progress[device] = i + 1
            finally:
                client.close()
                sent.set()
            return answers

        with ThreadPoolExecutor(devices) as pool:
            futures = [pool.submit(edge, d) for d in range(devices)]
            wait_until(lambda: sum(progress) >= devices * per_device // 4)
            cluster.replicas[1].kill()  # SIGKILL: no goodbye, claims left open
            wait_until(lambda: sum(progress) >= devices * per_device // 2)
            server.restart()
            answers = [a for f in futures for a in f.result(timeout=240)]

        assert cluster.replicas[1].poll() is not None
        assert len(answers) == devices * per_device
        ids = [a["frame_id"] for a in answers]
        assert None not in ids and len(set(ids)) == len(ids)
        with psycopg.connect(database_url) as conn:
            stored, keys = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT idem_key) FROM frames"
            ).fetchone()
        assert stored == keys == devices * per_device  # no duplicate, none lost
        for frame_id in ids[:: per_device // 4]:  # queryable through the balancer
            got = httpx.get(
                f"{cluster.url}/v1/frames/{frame_id}",
                headers={"Authorization": "Bearer read"},
                timeout=10,
            )
            assert got.status_code == 200 and got.json()["frame_id"] == frame_id


def wait_until(condition, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)
