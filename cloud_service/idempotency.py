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


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Problem(
            400,
            "bad-idempotency-key",
            "bad Idempotency-Key",
            f"1 to {MAX_KEY_LENGTH} printable characters",
        )


def _reused() -> Problem:
    return Problem(
        422,
        "idempotency-key-reused",
        "Idempotency-Key reused with another body",
        "this key was first used with a different frame; use a new key per frame",
    )


def _in_flight() -> Problem:
    return Problem(
        409,
        "request-in-flight",
        "request with this Idempotency-Key is in flight",
        "retry after the first request has finished",
        headers={"Retry-After": "1"},
    )


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
        _check_key(key)
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
                raise _reused()
            if entry.response is None:
                raise _in_flight()
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


class SqliteIdempotencyStore(IdempotencyStore):
    """The same contract, persisted in SQLite (WAL), so a restarted service still recognises keys.

    A response is written before it is sent: a frame the service answered before a crash is
    replayed, not classified again, when the edge retries. Claims left in flight by a process
    that died are dropped at start-up and after ``stale_s``. One file serves the processes of one
    host (uvicorn --workers); replicas on several hosts need a shared store (see the README).
    """

    def __init__(
        self, path: str, ttl_s: float = 3600.0, max_entries: int = 100_000, stale_s: float = 60.0
    ):
        import sqlite3

        super().__init__(ttl_s, max_entries)
        self.stale_s = stale_s
        self.db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # durable before the response leaves
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS idem (key TEXT PRIMARY KEY, body_hash TEXT NOT NULL, created REAL NOT NULL, "
            "status INTEGER, body BLOB, media_type TEXT)"
        )
        self.db.execute("DELETE FROM idem WHERE status IS NULL")

    def begin(self, key: str, body: bytes, now: float | None = None) -> Stored | None:
        _check_key(key)
        now = time.time() if now is None else now
        digest = self.body_hash(body)
        with self._lock:
            self.db.execute(
                "DELETE FROM idem WHERE created < ? OR (status IS NULL AND created < ?)",
                (now - self.ttl_s, now - self.stale_s),
            )
            cur = self.db.execute(
                "INSERT OR IGNORE INTO idem (key, body_hash, created) VALUES (?, ?, ?)",
                (key, digest, now),
            )
            if cur.rowcount == 1:
                return None
            row = self.db.execute(
                "SELECT body_hash, status, body, media_type FROM idem WHERE key = ?", (key,)
            ).fetchone()
        if row is None:  # expired between the statements: claim it again
            return self.begin(key, body, now)
        if row[0] != digest:
            raise _reused()
        if row[1] is None:
            raise _in_flight()
        return Stored(row[1], row[2], row[3])

    def complete(self, key: str, response: Stored) -> None:
        with self._lock:
            self.db.execute(
                "UPDATE idem SET status = ?, body = ?, media_type = ? WHERE key = ?",
                (response.status, response.body, response.media_type, key),
            )

    def abandon(self, key: str) -> None:
        with self._lock:
            self.db.execute("DELETE FROM idem WHERE key = ? AND status IS NULL", (key,))

    def __len__(self) -> int:
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM idem").fetchone()[0]
