"""RFC 3339 timestamps in and out of the API; the store keeps integer microseconds (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_rfc3339(text: str) -> int:
    """Microseconds since the epoch; ValueError unless ``text`` is RFC 3339 with a time zone."""
    when = datetime.fromisoformat(text.strip())
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (RFC 3339 needs Z or +hh:mm)")
    return int(when.timestamp() * 1_000_000)


def format_rfc3339(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat().replace("+00:00", "Z")


def now_us() -> int:
    return int(datetime.now(UTC).timestamp() * 1_000_000)
