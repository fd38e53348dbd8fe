"""A closed-loop HTTP/1.1 load generator on raw asyncio streams, for the benchmarks.

httpx's async pool costs a millisecond or more of CPU per request and grows with the number of
connections; on this 2-core machine, at 128 clients the generator itself ate the cores the server
needed (the server sat half idle while p99 reached 5 s). This client writes the request bytes and
parses only the status line and Content-Length: tens of microseconds per request, so what the
benchmarks measure is the server. Keep-alive connections, one per client; a 503 with Retry-After
makes that client wait as the edge does.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)  # successful (2xx) requests only
    errors: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def summary(self) -> dict[str, object]:
        lat = np.array(self.latencies_s) * 1e3
        pct = (lambda q: round(float(np.percentile(lat, q)), 2)) if len(lat) else (lambda q: None)
        return {
            "requests": len(lat),
            "req_s": round(len(lat) / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "p50_ms": pct(50),
            "p99_ms": pct(99),
            "errors": self.errors,
        }


class Connection:
    def __init__(self, url: str):
        parts = urlsplit(url)
        self.host, self.port, self.path = (
            parts.hostname or "127.0.0.1",
            parts.port or 80,
            parts.path,
        )
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"POST {self.path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        response_headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            response_headers[name.strip().lower()] = value.strip()
        await self.reader.readexactly(int(response_headers.get("content-length", 0)))
        if response_headers.get("connection", "").lower() == "close":
            self.close()
        return status, response_headers

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def closed_loop(
    url: str,
    bodies: list[bytes],
    headers: dict[str, str],
    concurrency: int,
    seconds: float,
    result: LoadResult | None = None,
    key_prefix: str | None = None,
) -> LoadResult:
    """``concurrency`` clients send ``bodies`` back to back for ``seconds``; with ``key_prefix``
    each request carries its own Idempotency-Key, as the edge's do."""
    result = result or LoadResult()
    deadline = time.perf_counter() + seconds

    async def client(i: int) -> None:
        conn, n = Connection(url), i
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                keyed = (
                    headers
                    if key_prefix is None
                    else {**headers, "Idempotency-Key": f"{key_prefix}-{i}-{n}"}
                )
                status, got = await conn.post(bodies[n % len(bodies)], keyed)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                name = type(exc).__name__
                result.errors[name] = result.errors.get(name, 0) + 1
                conn.close()
                await asyncio.sleep(0.01)
                continue
            finally:
                n += 1
            if 200 <= status < 300:
                result.latencies_s.append(time.perf_counter() - t0)
            else:
                result.errors[str(status)] = result.errors.get(str(status), 0) + 1
                if "retry-after" in got:
                    await asyncio.sleep(
                        min(float(got["retry-after"]), deadline - time.perf_counter())
                    )
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    result.elapsed_s = time.perf_counter() - start
    return result
