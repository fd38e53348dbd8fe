"""A stream through nginx in front of two replicas sharing PostgreSQL: deltas land on either
replica and decode against the state the other wrote; one replica SIGKILLed mid-stream loses no
frame and doubles none."""

from __future__ import annotations

import shutil

import psycopg
import pytest

from cloud_service.cluster import running_cluster
from edge_client.client import CloudClient
from edge_client.encoder import EdgeEncoder
from edge_client.frame_queue import FrameQueue
from edge_client.stream import StreamSender
from shared.bundles import DEFAULT_BUNDLE
from tests.test_stream_cloud import scene

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx")


def test_a_stream_through_two_replicas_one_killed(postgres_server, tmp_path):
    database_url = postgres_server()
    images = scene(12, seed=8)
    encoder = EdgeEncoder(DEFAULT_BUNDLE, qf=4)
    with running_cluster([DEFAULT_BUNDLE], database_url, replicas=2, idempotency_lease_s=3) as c:
        client = CloudClient(
            c.url, device_id="cam-r", max_retries=40, timeout=30, backoff_base=0.05, backoff_cap=1
        )
        sender = StreamSender(encoder, client, FrameQueue(tmp_path / "q"), "cam-r")
        for i, im in enumerate(images):
            if i == len(images) // 2:
                c.replicas[1].kill()  # SIGKILL: no goodbye
            sender.capture(im)
            assert sender.drain()
        assert c.replicas[1].poll() is not None
    assert len(sender.results) == len(images) and not len(sender.queue)
    assert sender.counts["promoted"] == 0  # every delta found its reference, on either replica
    # A skip is counted on the row it repeats (its frame_id); every other frame has its own row.
    skips = [r["frame_id"] for r in sender.results if r.get("repeat")]
    ids = [r["frame_id"] for r in sender.results if not r.get("repeat")]
    assert skips and None not in ids and len(set(ids)) == len(ids) and set(skips) <= set(ids)
    with psycopg.connect(database_url) as conn:
        stored, keys, repeats = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT idem_key), SUM(repeats) FROM frames "
            "WHERE device = 'cam-r'"
        ).fetchone()
        (seq,) = conn.execute("SELECT seq FROM stream_state WHERE device_id = 'cam-r'").fetchone()
    assert stored == keys == len(ids)  # none lost, none doubled
    assert repeats == len(skips)  # each skip counted once, a retried one too
    assert seq == len(images) - 1
