"""The frame format: round trips, golden bytes, and every kind of damage raising BitstreamError."""

from __future__ import annotations

import contextlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import bitstream
from shared.codecs import make_codec
from shared.errors import REASONS, BitstreamError
from tests.golden.make_golden import frame_for, golden_cases

GOLDEN = Path(__file__).parent / "golden"


def sample_frame(**overrides) -> bitstream.Frame:
    fields = dict(
        codec=2,
        qf=48,
        model_id=b"\x01" * 8,
        latent_shape=(32, 14, 14),
        image_size=(640, 480),
        payload=bytes(range(200)),
        stride=16,
    )
    fields.update(overrides)
    return bitstream.Frame(**fields)


@pytest.mark.parametrize("n", [0, 1, 200, 4097])
def test_every_frame_costs_its_payload_plus_34_bytes_and_bpp_counts_them(n):
    frame = sample_frame(payload=bytes(n))
    packed = bitstream.pack(frame)
    assert len(packed) - n == 34 <= 40  # the header budget the format promises
    assert frame.bpp == 8 * len(packed) / (224 * 224)  # bpp includes header and CRC


def test_pack_unpack_round_trip():
    frame = sample_frame()
    assert bitstream.unpack(bitstream.pack(frame)) == frame
    assert frame.input_size == (224, 224)
    assert frame.bpp == pytest.approx(8 * (34 + 200) / 224**2)


@pytest.mark.parametrize(
    "case", list(golden_cases()), ids=lambda c: c[0] if isinstance(c, str) else ""
)
def test_golden_frames_are_stable(case):
    codec, qf, tables, symbols = case
    golden = (GOLDEN / f"{codec}-v{bitstream.VERSION}.spic").read_bytes()
    assert frame_for(codec, qf, tables, symbols) == golden, "the format changed: bump VERSION"
    frame = bitstream.unpack(golden)
    np.testing.assert_array_equal(
        make_codec(codec, tables).decode(frame.payload, frame.latent_shape), symbols
    )


def _golden_bytes() -> list[bytes]:
    return [p.read_bytes() for p in sorted(GOLDEN.glob("*.spic"))]


@pytest.mark.parametrize("data", _golden_bytes())
def test_every_truncation_is_refused(data):
    for n in range(len(data)):
        with pytest.raises(BitstreamError) as err:
            bitstream.unpack(data[:n])
        assert err.value.reason == "truncated"


@pytest.mark.parametrize("data", _golden_bytes())
def test_every_single_bit_flip_is_refused(data):
    for i in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[i // 8] ^= 1 << (i % 8)
        with pytest.raises(BitstreamError):
            bitstream.unpack(bytes(damaged))


def test_trailing_bytes_are_refused():
    data = bitstream.pack(sample_frame())
    with pytest.raises(BitstreamError) as err:
        bitstream.unpack(data + b"\x00")
    assert err.value.reason == "length_mismatch"


def _forge(**fields) -> bytes:
    """A header with arbitrary fields and a *valid* CRC, as a hostile sender would make."""
    values = dict(
        magic=b"SPIC",
        version=1,
        codec=2,
        qf=16,
        stride_log2=4,
        model_id=b"\0" * 8,
        c=32,
        h=14,
        w=14,
        iw=224,
        ih=224,
        payload_len=0,
    )
    values.update(fields)
    # The declared length is what is tested; the bytes sent stay small (never 4 GB of zeros).
    payload = fields.get("payload", b"\0" * min(values["payload_len"], 64))
    values.pop("payload", None)
    body = bitstream.HEADER.pack(*values.values()) + payload
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"magic": b"JPEG"}, "bad_magic"),
        ({"version": 3}, "unsupported_version"),
        ({"version": 2}, "truncated"),  # a version-1 header is short of the stream fields
        ({"codec": 9}, "unknown_codec"),
        ({"qf": 0}, "limits"),
        ({"stride_log2": 8}, "limits"),
        ({"c": 0}, "limits"),
        ({"c": 1024, "h": 1024, "w": 1024}, "limits"),
        ({"h": 65535}, "limits"),
        ({"payload_len": 0xFFFFFFFF}, "limits"),
    ],
)
def test_bad_fields_with_valid_crc_are_refused(fields, reason):
    with pytest.raises(BitstreamError) as err:
        bitstream.unpack(_forge(**fields))
    assert err.value.reason == reason
    assert str(err.value)


def test_reasons_are_documented():
    import shared.errors

    for reason in REASONS:
        assert f"``{reason}``" in shared.errors.__doc__


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data):
    with contextlib.suppress(BitstreamError):
        bitstream.unpack(data)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_behind_a_valid_header(data):
    """Random bytes after a plausible magic and version reach the deeper checks."""
    with contextlib.suppress(BitstreamError):
        bitstream.unpack(b"SPIC\x01" + data)
