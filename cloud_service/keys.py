"""Per-device API keys, kept in the service's database (SQLite or PostgreSQL), hashed at rest.

``spic-cloud keys add --device cam-1`` makes a key of 256 random bits and prints it once; the
database keeps only its SHA-256 (a key that random needs no slow hash: nothing can be guessed), a
few leading characters to tell keys apart in a listing, its scope (upload, read, admin, labeller) and, for
an upload key, the one device it may send as. Revoking a key marks its row; the service looks a
key up per request through a cache of ``SPIC_CLOUD_KEY_CACHE_S`` seconds, so a revocation takes
effect within that time on every replica, without a restart.

The table lives in ``keys.sqlite`` beside the results store (``SPIC_CLOUD_DATA_DIR``), or in the
PostgreSQL database of ``SPIC_CLOUD_DATABASE_URL``, so every replica and the CLI share it.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from cloud_service.database import Database, Migration, migrate, open_database
from cloud_service.timeutil import now_us
from shared.schemas import DEVICE_ID

# labeller: may label stored frames (PUT /v1/frames/{id}/label) for training heads, nothing else.
# operator: may ask cameras for better pictures of stored frames (POST /v1/frames/{id}/refine).
Scope = Literal["upload", "read", "admin", "labeller", "operator"]
SCOPES: tuple[Scope, ...] = ("upload", "read", "admin", "labeller", "operator")
KEY_PREFIX = "spic_"  # marks a key as this service's in logs and secret scanners
HINT_CHARS = len(KEY_PREFIX) + 4

MIGRATIONS: list[Migration] = [
    (
        1,
        [
            "CREATE TABLE api_keys (id INTEGER PRIMARY KEY AUTOINCREMENT, key_hash TEXT NOT NULL "
            "UNIQUE, hint TEXT NOT NULL, scope TEXT NOT NULL, device TEXT, created_us INTEGER "
            "NOT NULL, revoked_us INTEGER)",
        ],
        [
            "CREATE TABLE api_keys (id BIGSERIAL PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, "
            "hint TEXT NOT NULL, scope TEXT NOT NULL, device TEXT, created_us BIGINT NOT NULL, "
            "revoked_us BIGINT)",
        ],
    ),
]
COLUMNS = "id, key_hash, hint, scope, device, created_us, revoked_us"


@dataclass(frozen=True)
class ApiKey:
    id: int
    key_hash: str
    hint: str  # the key's first characters: enough to recognise it, far too few to use it
    scope: Scope
    device: str | None  # the only device an upload key may send as; a label on other keys
    created_us: int
    revoked_us: int | None = None

    @property
    def namespace(self) -> str:
        """The caller's idempotency namespace. A camera's, whichever of its keys it uses: a frame
        retried across a key rotation is still answered once."""
        if self.scope == "upload" and self.device:
            return hashlib.sha256(f"device\0{self.device}".encode()).hexdigest()[:16]
        return self.key_hash[:16]


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _row(r: Any) -> ApiKey:
    return ApiKey(
        int(r[0]),
        str(r[1]),
        str(r[2]),
        cast(Scope, r[3]),
        r[4],
        int(r[5]),
        None if r[6] is None else int(r[6]),
    )


class KeyStore:
    """Keys in ``db``; ``find`` answers from a cache at most ``cache_s`` old."""

    def __init__(self, db: Database, cache_s: float = 2.0, cache_entries: int = 4096):
        self.db = db
        self.cache_s, self.cache_entries = cache_s, cache_entries
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._any: tuple[float, bool] | None = None
        self._lock = threading.Lock()
        migrate(db, "spic_keys_schema", MIGRATIONS)

    def add(self, scope: Scope, device: str | None = None) -> tuple[ApiKey, str]:
        """A new key: its row and the key itself, which is not kept anywhere."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        if scope == "upload" and device is None:
            raise ValueError("an upload key needs --device: the camera it may send as")
        if device is not None and not DEVICE_ID.match(device):
            raise ValueError("a device id is a slug: letters, digits, . _ -, up to 64")
        with self.db.session() as run:
            return self._insert(run, scope, device)

    @staticmethod
    def _insert(run: Any, scope: Scope, device: str | None) -> tuple[ApiKey, str]:
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        digest, hint = hash_key(secret), secret[:HINT_CHARS]
        run(
            "INSERT INTO api_keys (key_hash, hint, scope, device, created_us) "
            "VALUES (?, ?, ?, ?, ?)",
            (digest, hint, scope, device, now_us()),
        )
        row = run(f"SELECT {COLUMNS} FROM api_keys WHERE key_hash = ?", (digest,)).fetchone()
        return _row(row), secret

    def find(self, secret: str) -> ApiKey | None:
        """The active key ``secret`` is, or None (unknown or revoked)."""
        digest = hash_key(secret)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        with self.db.session() as run:
            row = run(
                f"SELECT {COLUMNS} FROM api_keys WHERE key_hash = ? AND revoked_us IS NULL",
                (digest,),
            ).fetchone()
        key = _row(row) if row else None
        with self._lock:
            if len(self._cache) >= self.cache_entries:  # unknown keys cannot grow it unbounded
                self._cache.clear()
            self._cache[digest] = (now + self.cache_s, key)
        return key

    def has_keys(self) -> bool:
        """Whether any key was ever made: authentication is on from then on, even once every key
        is revoked (revoking the last key must not open the service)."""
        now = time.monotonic()
        # Rows are never deleted, so a yes is final; a no is asked again after cache_s.
        if self._any is not None and (self._any[1] or self._any[0] > now):
            return self._any[1]
        with self.db.session() as run:
            found = run("SELECT 1 FROM api_keys LIMIT 1").fetchone() is not None
        self._any = (now + self.cache_s, found)
        return found

    def listing(self, include_revoked: bool = False) -> list[ApiKey]:
        sql = f"SELECT {COLUMNS} FROM api_keys"
        if not include_revoked:
            sql += " WHERE revoked_us IS NULL"
        with self.db.session() as run:
            return [_row(r) for r in run(sql + " ORDER BY id").fetchall()]

    def revoke(self, key_id: int | None = None, device: str | None = None) -> list[ApiKey]:
        """Revoke one key by id, or every active key of a device; the keys revoked."""
        if (key_id is None) == (device is None):
            raise ValueError("revoke one key id or one device")
        column, value = ("id", key_id) if key_id is not None else ("device", device)
        with self.db.session() as run:
            rows = run(
                f"SELECT {COLUMNS} FROM api_keys WHERE {column} = ? AND revoked_us IS NULL",
                (value,),
            ).fetchall()
            run(
                f"UPDATE api_keys SET revoked_us = ? WHERE {column} = ? AND revoked_us IS NULL",
                (now_us(), value),
            )
        return [_row(r) for r in rows]

    def rotate(self, key_id: int) -> tuple[ApiKey, str]:
        """A new key of the same scope and device as ``key_id``, which is revoked: both in one
        transaction, so a device never ends with two live keys (or none) from one rotation."""
        with self.db.transaction() as run:
            row = run(
                f"SELECT {COLUMNS} FROM api_keys WHERE id = ? AND revoked_us IS NULL", (key_id,)
            ).fetchone()
            if row is None:
                raise LookupError(f"no active key {key_id}")
            old = _row(row)
            run("UPDATE api_keys SET revoked_us = ? WHERE id = ?", (now_us(), key_id))
            return self._insert(run, old.scope, old.device)

    def close(self) -> None:
        self.db.close()


def open_keys(database_url: str, data_dir: str | Path, cache_s: float = 2.0) -> KeyStore:
    """PostgreSQL for ``postgresql://...``; otherwise SQLite in ``data_dir/keys.sqlite``."""
    return KeyStore(open_database(database_url, Path(data_dir) / "keys.sqlite"), cache_s)
