"""Idempotency-Key handling, after the IETF httpapi draft.

* The first request with a key runs; its response (status, body, content type) is stored.
* A retry with the same key and the same body gets the stored response, marked
  ``Idempotent-Replayed: true``.
* The same key with a different body gets 422; a retry while the first is still running gets 409
  with Retry-After (the edge retries it).
* Keys are scoped by the caller (a digest of its API key) and the route, so two clients that pick
  the same key never see each other's answers. A key is 1 to ``MAX_KEY_LENGTH`` printable
  characters, checked as the client sent it.
* Entries expire after a TTL, and the store is bounded by entries and by stored bytes (oldest
  completed entries are evicted first). A response marked ``recompute`` (a reconstruction: a
  pure function of the frame, ~76 kB of PNG) keeps only its status: a retry runs it again.
* A claim whose request never completed (its process died) is released after a lease.

``IdempotencyStore`` lives in the process; ``SqlIdempotencyStore`` (``idempotency_sql``) persists
in a SQLite file shared by the worker processes of one host, or in PostgreSQL shared by replicas on
many hosts. The contract is the three methods ``begin``, ``complete`` and ``abandon``. Neither
outlives its TTL or a restart in memory, but the results store keeps every classified frame's key
for as long as the frame: a key seen again with another frame is refused there too (422).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from cloud_service.problems import Problem

MAX_KEY_LENGTH = 200


def check_key(key: str) -> None:
    """Refuse an empty, over-long or non-printable key, as the client sent it (400)."""
    if not key.strip() or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Problem(
            400,
            "bad-idempotency-key",
            "bad Idempotency-Key",
            f"an Idempotency-Key is 1 to {MAX_KEY_LENGTH} printable characters, not blank",
        )


def scoped_key(caller: str, route: str, key: str) -> str:
    """The store's key: the client's key within its caller's and route's namespace."""
    check_key(key)
    return f"{caller}:{route}:{key}"


def reused() -> Problem:
    return Problem(
        422,
        "idempotency-key-reused",
        "Idempotency-Key reused with another body",
        "this key was first used with a different frame; use a new key per frame",
    )


def in_flight(retry_after_s: int) -> Problem:
    return Problem(
        409,
        "request-in-flight",
        "request with this Idempotency-Key is in flight",
        "retry after the first request has finished",
        headers={"Retry-After": str(retry_after_s)},
    )


@dataclass
class Stored:
    status: int
    body: bytes
    media_type: str
    recompute: bool = False  # only the status is kept; a replay runs the request again

    @property
    def size(self) -> int:
        return len(self.body)


@dataclass
class _Entry:
    body_hash: str
    created: float
    response: Stored | None = None  # None while in flight


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class IdempotencyStore:
    def __init__(
        self,
        ttl_s: float = 3600.0,
        max_entries: int = 100_000,
        max_bytes: int = 64 << 20,
        lease_s: float = 60.0,
    ):
        self.ttl_s, self.max_entries, self.max_bytes, self.lease_s = (
            ttl_s,
            max_entries,
            max_bytes,
            lease_s,
        )
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def begin(self, key: str, body: bytes, now: float | None = None) -> Stored | None:
        """Claim ``key`` for this body. Returns a stored response to replay, or None to proceed."""
        now = time.monotonic() if now is None else now
        digest = body_hash(body)
        with self._lock:
            self._expire(now)
            entry = self._entries.get(key)
            if entry is not None and entry.response is None and now - entry.created > self.lease_s:
                del self._entries[key]  # its request never finished: release the claim
                entry = None
            if entry is None:
                self._entries[key] = _Entry(digest, now)
                self._evict()
                return None
            if entry.body_hash != digest:
                raise reused()
            if entry.response is None:
                raise in_flight(1)
            return entry.response

    def complete(self, key: str, response: Stored) -> None:
        if response.recompute:
            response = Stored(response.status, b"", response.media_type, recompute=True)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            if entry.response is not None:
                self._bytes -= entry.response.size
            entry.response = response
            self._bytes += response.size
            self._evict()

    def abandon(self, key: str) -> None:
        """The request failed in a way a retry may fix (overload, server error): forget the key."""
        with self._lock:
            if key in self._entries:
                self._drop(key)

    def _expire(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if now - entry.created <= self.ttl_s:
                break
            self._drop(key)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        if entry.response is not None:
            self._bytes -= entry.response.size

    def _evict(self) -> None:
        """Oldest completed entries first; claims in flight are never evicted."""
        count, size, victims = len(self._entries), self._bytes, []
        for key, entry in self._entries.items():  # oldest first; stops as soon as both hold
            if count <= self.max_entries and size <= self.max_bytes:
                break
            if entry.response is not None:
                victims.append(key)
                count, size = count - 1, size - entry.response.size
        for key in victims:
            self._drop(key)

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        """Nothing to release in memory; a database store closes its connections."""

    def stored_bytes(self) -> int:
        return self._bytes
