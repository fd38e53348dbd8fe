"""A minimal stand-in for the cloud's /v1/classify, for edge-client tests: a real HTTP server on
127.0.0.1 that remembers Idempotency-Keys, so tests can count what arrived and how often."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler

from tests.local_http import LocalServer


class StubCloud:
    def __init__(
        self,
        fail_first: int = 0,
        retry_after: str = "0",
        status: int = 503,
        delay: float = 0.0,
        problem_type: str = "urn:spic:problem:overloaded",
    ):
        self.accepted: list[str] = []  # keys, in the order first accepted
        self.posts: Counter[str] = Counter()
        self.fail_first, self.retry_after, self.status, self.delay = (
            fail_first,
            retry_after,
            status,
            delay,
        )
        self.problem_type = problem_type
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = self.headers.get("Idempotency-Key", "")
                time.sleep(stub.delay)
                with stub.lock:
                    stub.posts[key] += 1
                    if stub.fail_first > 0:
                        stub.fail_first -= 1
                        self.send_response(stub.status)
                        self.send_header("Retry-After", stub.retry_after)
                        self.send_header("Content-Type", "application/problem+json")
                        self.end_headers()
                        problem = {
                            "type": stub.problem_type,
                            "title": "busy",
                            "status": stub.status,
                        }
                        self.wfile.write(json.dumps(problem).encode())
                        return
                    if key not in stub.accepted:
                        stub.accepted.append(key)
                answer = {
                    "label": "tench",
                    "class_id": 0,
                    "confidence": 0.9,
                    "bytes": len(body),
                    "bpp": 8 * len(body) / 224**2,
                    "qf": body[6] if len(body) > 6 else 0,
                    "request_id": key,
                }
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.http = LocalServer(Handler)
        self.url = self.http.url

    def close(self) -> None:
        self.http.close()
