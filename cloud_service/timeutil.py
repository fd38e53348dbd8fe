"""RFC 3339 timestamps in and out of the API; the store keeps integer microseconds (UTC).

Only instants that exist in UTC between years 1 and 9999 are taken in: an offset may push a
valid-looking local time out of that range (``0001-01-01T00:00:00+23:59`` is year 0 in UTC), and
such a value, once stored, could not be written back out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_US = (datetime.min.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
MAX_US = (datetime.max.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)


def parse_rfc3339(text: str) -> int:
    """Microseconds since the epoch; ValueError unless ``text`` is RFC 3339 with a time zone and
    its instant lies in years 1 to 9999 in UTC."""
    when = datetime.fromisoformat(text.strip())
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (RFC 3339 needs Z or +hh:mm)")
    try:
        utc = when.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is outside years 1 to 9999 in UTC") from None
    return (utc - EPOCH) // timedelta(microseconds=1)


def format_rfc3339(us: int) -> str:
    """ValueError for an instant outside years 1 to 9999 (never one ``parse_rfc3339`` gave)."""
    if not MIN_US <= us <= MAX_US:
        raise ValueError(f"{us} µs since the epoch is outside years 1 to 9999")
    return (EPOCH + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")


def format_rfc3339_or_none(us: int | None) -> str | None:
    """``format_rfc3339``, or None for no instant or one that cannot be written (a row stored by
    a release that let it in): a reader shows the rest of the row instead of failing."""
    if us is None or not MIN_US <= us <= MAX_US:
        return None
    return format_rfc3339(us)


def now_us() -> int:
    return (datetime.now(UTC) - EPOCH) // timedelta(microseconds=1)
