"""Idempotency-Key handling, after the IETF httpapi draft.

* The first request with a key runs; its response (status, body, content type) is stored.
* A retry with the same key and the same body gets the stored response, marked ``Idempotent-Replayed: true``.
* The same key with a different body gets 422; a retry while the first is still running gets 409.
* Entries expire after a TTL; the store is bounded (oldest completed entries are evicted first).

The store lives in the process. With several replicas behind a load balancer, route by the
``Idempotency-Key`` header (consistent hashing) or back this class with a shared store such as Redis
(``SET key value NX EX ttl``); see the README's deployment section.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from cloud_service.problems import Problem

MAX_KEY_LENGTH = 200


@dataclass
class Stored:
    status: int
    body: bytes
    media_type: str


@dataclass
class _Entry:
    body_hash: str
    created: float
    response: Stored | None = None  # None while in flight


class IdempotencyStore:
    def __init__(self, ttl_s: float = 3600.0, max_entries: int = 100_000):
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def body_hash(body: bytes) -> str:
        return hashlib.sha256(body).hexdigest()

    def begin(self, key: str, body: bytes, now: float | None = None) -> Stored | None:
        """Claim ``key`` for this body. Returns a stored response to replay, or None to proceed."""
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise Problem(
                400,
                "bad-idempotency-key",
                "bad Idempotency-Key",
                f"1 to {MAX_KEY_LENGTH} printable characters",
            )
        now = time.monotonic() if now is None else now
        digest = self.body_hash(body)
        with self._lock:
            self._expire(now)
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = _Entry(digest, now)
                self._evict()
                return None
            if entry.body_hash != digest:
                raise Problem(
                    422,
                    "idempotency-key-reused",
                    "Idempotency-Key reused with another body",
                    "this key was first used with a different frame; use a new key per frame",
                )
            if entry.response is None:
                raise Problem(
                    409,
                    "request-in-flight",
                    "request with this Idempotency-Key is in flight",
                    "retry after the first request has finished",
                    headers={"Retry-After": "1"},
                )
            return entry.response

    def complete(self, key: str, response: Stored) -> None:
        with self._lock:
            if key in self._entries:
                self._entries[key].response = response

    def abandon(self, key: str) -> None:
        """The request failed in a way a retry may fix (overload, server error): forget the key."""
        with self._lock:
            self._entries.pop(key, None)

    def _expire(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if now - entry.created <= self.ttl_s:
                break
            del self._entries[key]

    def _evict(self) -> None:
        while len(self._entries) > self.max_entries:
            for key, entry in self._entries.items():
                if entry.response is not None:
                    del self._entries[key]
                    break
            else:
                return

    def __len__(self) -> int:
        return len(self._entries)
