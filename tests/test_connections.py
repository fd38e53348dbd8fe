"""Connection exhaustion and overload: a real uvicorn on 127.0.0.1, raw sockets and HTTP.

Other loopback addresses (127.0.0.2...) play other clients: the caps count per client address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import sqlite3
import threading
import time

import httpx
import pytest
from PIL import Image

from bench.loadgen import Connection
from cloud_service.harness import cloud_process
from edge_client.encoder import EdgeEncoder
from tests.test_cloud import OCTET, _metric, is_problem, wait_for


@pytest.fixture(scope="module")
def frame(tiny_bundle) -> bytes:
    return EdgeEncoder(tiny_bundle, qf=48, cache_dir=False).encode(
        Image.new("RGB", (90, 70), (200, 40, 40))
    )


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def connect_from(address: str, port: int, n: int) -> list[socket.socket]:
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind((address, 0))
        s.connect(("127.0.0.1", port))
        sockets.append(s)
    return sockets


def answered(sockets: list[socket.socket], expected: int) -> list[socket.socket]:
    """The sockets the server answered without being asked (refused at accept): ``expected`` of
    them, and then no more."""
    found: list[socket.socket] = []

    def poll() -> bool:
        found[:] = select.select(sockets, [], [], 0.05)[0]
        return len(found) >= expected

    wait_for(poll)
    time.sleep(0.2)  # any connection refused beyond the expected would be readable by now
    poll()
    assert len(found) == expected
    return found


def read_answer(s: socket.socket) -> tuple[int, dict[str, str], dict]:
    """A whole HTTP/1.1 response read to the server's close: status, headers, JSON body."""
    s.settimeout(5)
    raw = b""
    while chunk := s.recv(65536):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def assert_refusal(s: socket.socket, status: int) -> dict:
    got, headers, body = read_answer(s)
    assert got == status and body["status"] == status
    assert headers["content-type"] == "application/problem+json"
    assert int(headers["retry-after"]) >= 1
    assert body["type"].startswith("urn:spic:problem:") and body["title"] and body["detail"]
    return body


def close_all(sockets: list[socket.socket]) -> None:
    for s in sockets:
        s.close()


CAPPED = dict(
    max_connections_per_client=16, max_connections=40, max_event_streams=8, header_timeout_s=60
)


def test_idle_connections_from_one_address_leave_the_service_to_others(tiny_bundle, frame):
    with cloud_process([tiny_bundle], **CAPPED) as (url, _):
        flood = connect_from("127.0.0.2", port_of(url), 150)
        try:
            refused = answered(flood, 150 - 16)  # 16 held open, idle; the rest answered at once
            for s in refused[:5]:
                assert assert_refusal(s, 429)["type"].endswith("too-many-connections")
            # Every legitimate request, each on a new connection, is served meanwhile.
            for _ in range(20):
                r = httpx.post(url + "/v1/classify", content=frame, headers=OCTET, timeout=10)
                assert r.status_code == 200, r.text
            # Refused connections closed, the accepted ones still there: the flood cannot
            # reopen past its cap.
            close_all(refused)
            again = connect_from("127.0.0.2", port_of(url), 10)
            assert_refusal(answered(again, 10)[0], 429)
            close_all(again)
        finally:
            close_all(flood)


def test_at_the_connection_limit_new_connections_get_503_problem_json(tiny_bundle, frame):
    with cloud_process([tiny_bundle], **CAPPED) as (url, _):
        port = port_of(url)
        held = [s for a in ("127.0.0.3", "127.0.0.4") for s in connect_from(a, port, 16)]
        third = connect_from("127.0.0.5", port, 16)  # 8 fit under max_connections (40)
        try:
            refused = answered(held + third, 8)
            assert all(s in third for s in refused)
            assert assert_refusal(refused[0], 503)["type"].endswith("connection-limit")
            r = httpx.post(url + "/v1/classify", content=frame, headers=OCTET, timeout=10)
            assert is_problem(r, 503)["type"].endswith("connection-limit")
            assert int(r.headers["retry-after"]) >= 1
        finally:
            close_all(held + third)
        # The places come back as soon as the connections close.
        wait_for(
            lambda: (
                httpx.post(url + "/v1/classify", content=frame, headers=OCTET).status_code == 200
            )
        )


UP, READ1, READ2 = "up-key", "read-one", "read-two"


def test_event_streams_are_capped_per_key_and_in_all(tiny_bundle, tmp_path):
    settings = dict(
        api_keys=UP,
        read_keys=f"{READ1},{READ2}",
        max_event_streams_per_key=2,
        max_event_streams=3,
        events_poll_s=0.1,
    )
    with cloud_process([tiny_bundle], **settings) as (url, _), httpx.Client(timeout=10) as client:

        def get(key: str) -> httpx.Response:
            return client.get(url + "/v1/events", headers={"Authorization": f"Bearer {key}"})

        with contextlib.ExitStack() as streams:

            def listen(key: str) -> contextlib.AbstractContextManager[httpx.Response]:
                headers = {"Authorization": f"Bearer {key}"}
                return client.stream("GET", url + "/v1/events", headers=headers)

            first = streams.enter_context(listen(READ1))
            streams.enter_context(listen(READ1))
            assert first.status_code == 200
            body = is_problem(get(READ1), 429)  # a third for the same key
            assert body["type"].endswith("too-many-streams")
            other = streams.enter_context(listen(READ2))
            assert other.status_code == 200  # another key still gets one
            refused = get(READ2)  # the fourth in all
            assert is_problem(refused, 503)["type"].endswith("stream-limit")
            assert int(refused.headers["retry-after"]) >= 1
            assert client.get(url + "/healthz").status_code == 200
        # Closed streams give their places back.
        wait_for(lambda: _stream_opens(url, READ1))


def _stream_opens(url: str, key: str) -> bool:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream("GET", url + "/v1/events", headers=headers, timeout=10) as r:
        return r.status_code == 200


def _head_only(port: int, length: int) -> socket.socket:
    """A classify request whose body has not been sent (yet)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(
        b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )
    return s


def test_a_full_service_refuses_classify_before_reading_the_body(tiny_bundle, frame, tmp_path):
    # queue_size 2 + a batch of 2: four frames fill the service. The test holds the results
    # store's write lock, so classified frames wait to be stored, still in the service.
    settings = dict(queue_size=2, max_batch_size=2, data_dir=tmp_path)
    with cloud_process([tiny_bundle], **settings) as (url, _):
        port = port_of(url)
        slow = [_head_only(port, len(frame)) for _ in range(2)]  # bodies still on their way
        store = sqlite3.connect(tmp_path / "results.sqlite", isolation_level=None)
        store.execute("BEGIN IMMEDIATE")
        results: list[int] = []

        def post() -> None:
            r = httpx.post(url + "/v1/classify", content=frame, headers=OCTET, timeout=30)
            results.append(r.status_code)

        posts = [threading.Thread(target=post) for _ in range(4)]
        try:
            wait_for(lambda: _metric(url, "spic_in_flight_requests") >= 3)  # + /metrics itself
            for t in posts:
                t.start()  # all admitted: the slow clients hold no place
            wait_for(lambda: _metric(url, "spic_in_flight_requests") >= 7)
            late = _head_only(port, len(frame))
            start = time.monotonic()
            late.settimeout(5)  # answered from the head alone, not after a body or its timeout
            answer = late.recv(65536)
            assert time.monotonic() - start < 2
            head, _, body = answer.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += late.recv(65536)
            assert head.startswith(b"HTTP/1.1 503") and b"application/problem+json" in head
            assert b"retry-after: 1" in head.lower()
            assert json.loads(body)["type"] == "urn:spic:problem:overloaded"
            late.close()
        finally:
            store.execute("COMMIT")
            store.close()
            for t in posts:
                t.join(30)
            close_all(slow)
        assert results == [200] * 4


def test_overload_is_shed_at_admission_not_after_decoding(tiny_bundle, frame):
    statuses: dict[int, int] = {}
    refusals: list[dict[str, str]] = []

    async def client() -> None:
        conn = Connection(url + "/v1/classify")
        for _ in range(12):
            status, headers = await conn.post(frame, OCTET)
            statuses[status] = statuses.get(status, 0) + 1
            if status != 200:
                refusals.append(headers)
        conn.close()

    async def flood() -> None:
        await asyncio.gather(*(client() for _ in range(48)))

    with cloud_process([tiny_bundle], queue_size=4, max_batch_size=4) as (url, _):
        asyncio.run(flood())
        # Every refusal came before the frame was read or decoded; none after.
        assert _metric(url, 'spic_shed_total{reason="admission"}') == statuses.get(503), statuses
        metrics = httpx.get(url + "/metrics").text
    assert 'reason="queue_full"' not in metrics and 'reason="waited_too_long"' not in metrics
    assert set(statuses) == {200, 503} and statuses[200] >= 12, statuses
    for headers in refusals:
        assert headers["content-type"] == "application/problem+json" and "retry-after" in headers
