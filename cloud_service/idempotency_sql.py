"""``SqlIdempotencyStore``: the idempotency contract of ``idempotency`` in a database, a SQLite
file shared by the workers of one host or PostgreSQL shared by replicas on many hosts."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from cloud_service.database import Database, Migration, migrate
from cloud_service.idempotency import (
    IdempotencyStore,
    Stored,
    body_hash,
    in_flight,
    reused,
)

log = logging.getLogger("spic.cloud.idempotency")
CLAIM_ATTEMPTS = 5  # claim, release an expired or stale row, claim again: a few rounds at most
EVICT_BATCH = 1000  # rows read per eviction step: the table is never loaded whole


def _owner() -> str:
    """host:pid:token. The token tells apart two stores of one process (and a reused pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


IDEMPOTENCY_MIGRATIONS: list[Migration] = [
    (
        1,
        [
            "CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, body_hash TEXT NOT "
            "NULL, created REAL NOT NULL, owner TEXT NOT NULL, status INTEGER, body BLOB, "
            "media_type TEXT, recompute INTEGER NOT NULL DEFAULT 0, size INTEGER NOT NULL DEFAULT 0)",
            "CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency (created)",
        ],
        [
            "CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, body_hash TEXT NOT "
            "NULL, created DOUBLE PRECISION NOT NULL, owner TEXT NOT NULL, status INTEGER, "
            "body BYTEA, media_type TEXT, recompute INTEGER NOT NULL DEFAULT 0, "
            "size INTEGER NOT NULL DEFAULT 0)",
            "CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency (created)",
        ],
    ),
]


class SqlIdempotencyStore(IdempotencyStore):
    """The same contract in a database: a SQLite file shared by the workers of one host, or
    PostgreSQL shared by replicas on many hosts, so a retry that lands anywhere is replayed.

    * **Claim.** ``INSERT ... ON CONFLICT (key) DO NOTHING``: of two replicas that claim a key at
      once exactly one inserts; the other reads the row and answers 409 (in flight), 422 (another
      body) or replays the stored answer.
    * **Lease.** Each claim records its owner (host:pid) and time. A claim still open after
      ``lease_s`` is released, so a replica that dies mid-request never strands a key; a
      starting process also releases at once the claims of dead processes on its own host.
      Replicas' clocks must agree to well within the lease (NTP does).
    * **Answer first.** The answer is written before it is sent: a frame answered just before a
      crash is replayed, not classified again, when the edge retries.
    * Bounds are kept every ``CHECK_EVERY`` completions: the TTL everywhere, entries and bytes on
      SQLite (see ``enforce_bounds``).
    """

    CHECK_EVERY = 64

    def __init__(
        self,
        db: Database,
        ttl_s: float = 3600.0,
        max_entries: int = 100_000,
        max_bytes: int = 64 << 20,
        lease_s: float = 60.0,
    ):
        super().__init__(ttl_s, max_entries, max_bytes, lease_s)
        self.db, self.owner = db, _owner()
        self._completed = 0
        # key -> requests of this process claiming or answering it (a claim of ours that none
        # holds is stale: its release failed while the database was down)
        self._holders: Counter[str] = Counter()
        migrate(db, "spic_idempotency_schema", IDEMPOTENCY_MIGRATIONS)
        self._release_dead_owners()

    def _release_dead_owners(self) -> None:
        host = socket.gethostname()
        with self.db.session() as run:
            owners = run("SELECT DISTINCT owner FROM idempotency WHERE status IS NULL").fetchall()
            for (owner,) in owners:
                owner_host, pid, _token = (owner.rsplit(":", 2) + ["", ""])[:3]
                if owner_host == host and pid.isdigit() and not _pid_alive(int(pid)):
                    run("DELETE FROM idempotency WHERE status IS NULL AND owner = ?", (owner,))
                    log.info("released the in-flight claims of %s, which is gone", owner)

    def begin(self, key: str, body: bytes, now: float | None = None) -> Stored | None:
        # A new key (nearly every request) costs one statement: the claim itself. Expiry is
        # checked only when the key is already there.
        now = time.time() if now is None else now
        digest = body_hash(body)
        with self._lock:
            self._holders[key] += 1  # before the INSERT: see _released
        claimed = False
        try:
            for _ in range(CLAIM_ATTEMPTS):
                with self.db.session() as run:
                    claimed = (
                        run(
                            "INSERT INTO idempotency (key, body_hash, created, owner) "
                            "VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING RETURNING key",
                            (key, digest, now, self.owner),
                        ).fetchone()
                        is not None
                    )
                    if claimed:
                        return None
                    row = run(
                        "SELECT body_hash, status, body, media_type, recompute, owner, created "
                        "FROM idempotency WHERE key = ?",
                        (key,),
                    ).fetchone()
                    if row is not None and self._released(row, key, now):
                        # Only the row judged: another replica may have claimed the key since.
                        run("DELETE FROM idempotency WHERE key = ? AND created = ?", (key, row[6]))
                        continue
                if row is None:  # gone between the statements: claim it again
                    continue
                if row[0] != digest:
                    raise reused()
                if row[1] is None:
                    raise in_flight(1)
                return Stored(row[1], bytes(row[2] or b""), row[3], recompute=bool(row[4]))
            raise in_flight(1)  # the key kept changing hands: let the client retry
        finally:
            if not claimed:
                self._let_go(key)

    def _let_go(self, key: str) -> None:
        with self._lock:
            self._holders[key] -= 1
            if self._holders[key] <= 0:
                del self._holders[key]

    def _released(self, row: Sequence[Any], key: str, now: float) -> bool:
        """Whether a stored key no longer holds: past its TTL, a claim past its lease, or a claim
        of ours that no request of this process is answering (its release failed: the database
        was down then)."""
        status, owner, created = row[1], row[5], row[6]
        if created < now - self.ttl_s:
            return True
        if status is not None:
            return False
        if created < now - self.lease_s:
            return True
        with self._lock:
            # 1: only the begin() asking holds it (a request of ours still answering makes it 2+)
            return bool(owner == self.owner and self._holders[key] <= 1)

    def complete(self, key: str, response: Stored) -> None:
        body = b"" if response.recompute else response.body
        try:
            with self.db.session() as run:
                # Only this owner's claim: one whose lease ran out may be another replica's now.
                run(
                    "UPDATE idempotency SET status = ?, body = ?, media_type = ?, recompute = ?, "
                    "size = ? WHERE key = ? AND owner = ?",
                    (
                        response.status,
                        body,
                        response.media_type,
                        int(response.recompute),
                        len(body),
                        key,
                        self.owner,
                    ),
                )
        finally:
            # Only now: a retry in this process meanwhile must see the claim held, not stale.
            self._let_go(key)
        with self._lock:
            self._completed += 1
            check = self._completed % self.CHECK_EVERY == 0
        if check:
            self.enforce_bounds()

    def enforce_bounds(self) -> None:
        """Drop expired entries (an indexed delete). On SQLite (one host's table) also drop the
        oldest completed ones, a batch at a time, until the entry and byte bounds hold. On
        PostgreSQL the TTL is the bound: the table is shared by every replica and holds rate × TTL
        entries (docs/deploy.md sizes it), and counting it on every check would scan it."""
        now = time.time()
        with self.db.session() as run:
            run("DELETE FROM idempotency WHERE created < ?", (now - self.ttl_s,))
            if self.db.engine != "sqlite":
                return
            count, size = run("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM idempotency").fetchone()
            while count > self.max_entries or size > self.max_bytes:
                oldest = run(
                    "SELECT key, size FROM idempotency WHERE status IS NOT NULL "
                    "ORDER BY created LIMIT ?",
                    (EVICT_BATCH,),
                ).fetchall()
                if not oldest:
                    break  # only claims in flight are left: they are never evicted
                for key, row_size in oldest:
                    if count <= self.max_entries and size <= self.max_bytes:
                        break
                    run("DELETE FROM idempotency WHERE key = ?", (key,))
                    count, size = count - 1, size - row_size

    def abandon(self, key: str) -> None:
        try:
            with self.db.session() as run:
                run(
                    "DELETE FROM idempotency WHERE key = ? AND status IS NULL AND owner = ?",
                    (key, self.owner),
                )
        finally:
            self._let_go(key)

    def __len__(self) -> int:
        with self.db.session() as run:
            return int(run("SELECT COUNT(*) FROM idempotency").fetchone()[0])

    def stored_bytes(self) -> int:
        with self.db.session() as run:
            return int(run("SELECT COALESCE(SUM(size), 0) FROM idempotency").fetchone()[0])

    def close(self) -> None:
        self.db.close()
