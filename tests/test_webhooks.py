"""Webhooks: a real receiver on 127.0.0.1 that fails at first; every frame arrives, signed."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler

import httpx
from PIL import Image

from cloud_service.harness import running_cloud
from cloud_service.webhooks import sign, verify
from edge_client.encoder import EdgeEncoder
from tests.local_http import LocalServer
from tests.test_cloud import wait_for

SECRET = "hook-secret"


class Receiver:
    """Answers 500 to the first ``fail_first`` posts, then 200; keeps what arrived."""

    def __init__(self, fail_first: int):
        self.fail_first, self.calls = fail_first, 0
        self.received: list[tuple[bytes, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls += 1
                if receiver.calls <= receiver.fail_first:
                    self.send_response(500)
                else:
                    receiver.received.append((body, self.headers["X-SPIC-Signature"]))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.http = LocalServer(Handler, "/hook")
        self.url = self.http.url

    def close(self) -> None:
        self.http.close()


def test_signature_round_trip_and_replay_window():
    body = b'{"frame_id": 1}'
    now = int(time.time())
    assert verify(SECRET, body, sign(SECRET, body, now))
    assert not verify("other", body, sign(SECRET, body, now))
    assert not verify(SECRET, body + b" ", sign(SECRET, body, now))
    assert not verify(SECRET, body, sign(SECRET, body, now - 3600))  # a replayed old delivery


def test_every_frame_is_delivered_signed_after_retries(tiny_bundle, tmp_path):
    receiver = Receiver(fail_first=2)
    frame = EdgeEncoder(tiny_bundle, cache_dir=False).encode(Image.new("RGB", (80, 64), "red"))
    settings = dict(webhook_url=receiver.url, webhook_secret=SECRET, data_dir=tmp_path)
    try:
        with running_cloud([tiny_bundle], **settings) as url:
            headers = {"Content-Type": "application/octet-stream", "X-Device-Id": "cam-w"}
            ids = [
                httpx.post(url + "/v1/classify", content=frame, headers=headers).json()["frame_id"]
                for _ in range(3)
            ]
            wait_for(lambda: len(receiver.received) == 3, timeout=30)
            metrics = httpx.get(url + "/metrics").text
    finally:
        receiver.close()
    payloads = [json.loads(body) for body, _ in receiver.received]
    assert [p["frame_id"] for p in payloads] == ids and payloads[0]["device_id"] == "cam-w"
    assert all(verify(SECRET, body, signature) for body, signature in receiver.received)
    assert 'spic_webhooks_total{outcome="retried"} 2.0' in metrics
    assert 'spic_webhooks_total{outcome="delivered"} 3.0' in metrics
