"""Unsigned LEB128 varints: 7 bits a byte, high bit set on every byte but the last."""

from __future__ import annotations

from shared.errors import BitstreamError

MAX_VARINT_BYTES = 5  # enough for any value below 2**35; every varint SPIC writes is a u32


def write_varint(value: int, out: bytearray) -> None:
    if value < 0 or value >= 1 << 32:
        raise ValueError(f"varint out of range: {value}")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Read one varint at ``pos``; returns (value, next position)."""
    value = shift = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            raise BitstreamError("truncated", "payload ends inside a varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >= 1 << 32:
                raise BitstreamError("corrupt_payload", "varint exceeds 32 bits")
            return value, pos + i + 1
        shift += 7
    raise BitstreamError("corrupt_payload", f"varint longer than {MAX_VARINT_BYTES} bytes")
