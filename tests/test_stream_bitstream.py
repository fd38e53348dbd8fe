"""Bitstream version 2 (stream frames): round trips, its rules, version 1 still read, and fuzzing
that malformed version-2 frames raise BitstreamError and nothing else."""

from __future__ import annotations

import contextlib
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import bitstream
from shared.errors import BitstreamError

FIELD = Path(__file__).parent / "golden" / "field"


def v2(**overrides) -> bitstream.Frame:
    fields = dict(
        codec=2,
        qf=4,
        model_id=b"\x01" * 8,
        latent_shape=(32, 14, 14),
        image_size=(640, 360),
        payload=bytes(range(40)),
        version=2,
        frame_type="delta",
        stream_id=7,
        seq=1000,
        ref_seq=999,
    )
    fields.update(overrides)
    return bitstream.Frame(**fields)


@pytest.mark.parametrize(
    "frame",
    [
        v2(),
        v2(frame_type="key", ref_seq=1000, codec=1),
        v2(frame_type="skip", payload=b""),
        v2(seq=0xFFFFFFFF, ref_seq=0xFFFFFFFF - 0xFFFF, stream_id=0xFFFF),
    ],
)
def test_v2_round_trip_and_overhead(frame):
    data = bitstream.pack(frame)
    assert len(data) == 45 + len(frame.payload) == frame.nbytes
    assert bitstream.unpack(data) == frame


def _v2_header(kind: int, seq: int, ref: int, payload_len: int, codec: int = 2) -> bytes:
    head = bitstream.HEADER.pack(
        b"SPIC", 2, codec, 4, 4, b"\x01" * 8, 32, 14, 14, 640, 360, payload_len
    )
    return head + struct.pack("<BHII", kind, 0, seq, ref)


@pytest.mark.parametrize(
    "frame",
    [
        v2(frame_type="key"),  # a key frame refers to itself
        v2(ref_seq=1000),  # a delta refers to an earlier frame
        v2(ref_seq=1001),
        v2(seq=70000, ref_seq=70000 - 0x10000),  # too far back
        v2(frame_type="skip"),  # a skip has no payload
        v2(payload=b""),  # a delta has one
        v2(codec=1),  # a delta is rANS
        v2(seq=1 << 32, ref_seq=(1 << 32) - 1),
        v2(stream_id=1 << 16),
    ],
)
def test_v2_rules_refuse_contradictions_on_both_sides(frame):
    with pytest.raises(BitstreamError) as err:
        bitstream.pack(frame)
    assert err.value.reason in ("stream", "limits")
    # The same fields forged with a valid CRC are refused by the reader too.
    if frame.seq > 0xFFFFFFFF or frame.stream_id > 0xFFFF:
        return  # not representable in the fields: the writer's refusal is the test
    kind = bitstream.FRAME_TYPES.index(frame.frame_type)
    body = _v2_header(kind, frame.seq, frame.ref_seq, len(frame.payload), frame.codec)
    body += frame.payload
    with pytest.raises(BitstreamError) as err:
        bitstream.unpack(body + struct.pack("<I", zlib.crc32(body)))
    assert err.value.reason == "stream"


def test_v1_frames_still_read_as_key_frames_outside_a_stream():
    frames = sorted(FIELD.glob("*.spic"))
    assert frames
    for path in frames:
        frame = bitstream.unpack(path.read_bytes())
        assert (frame.version, frame.frame_type, frame.overhead) == (1, "key", 34)
        assert bitstream.pack(frame) == path.read_bytes()


def test_a_v1_frame_cannot_be_a_delta():
    with pytest.raises(BitstreamError):
        bitstream.pack(v2(version=1))


def test_unknown_frame_type_is_refused():
    data = bytearray(bitstream.pack(v2()))
    data[30] = 3
    body = bytes(data[:-4])
    with pytest.raises(BitstreamError) as err:
        bitstream.unpack(body + struct.pack("<I", zlib.crc32(body)))
    assert err.value.reason == "stream"


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_after_a_v2_magic(data):
    with contextlib.suppress(BitstreamError):
        bitstream.unpack(b"SPIC\x02" + data)


@settings(max_examples=1500, deadline=None)
@given(
    st.integers(0, 255),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 3),
    st.binary(max_size=64),
    st.booleans(),
)
def test_fuzz_v2_fields_with_a_valid_crc(kind, seq, ref, payload_len, codec, payload, fix_len):
    """Whatever a hostile sender puts in the stream fields, a reader answers BitstreamError or a
    frame that satisfies every rule."""
    if fix_len:
        payload_len = len(payload)
    body = _v2_header(kind, seq, ref, payload_len, codec) + payload
    try:
        frame = bitstream.unpack(body + struct.pack("<I", zlib.crc32(body)))
    except BitstreamError:
        return
    assert frame.frame_type in bitstream.FRAME_TYPES
    if frame.frame_type == "key":
        assert frame.ref_seq == frame.seq
    else:
        assert 1 <= frame.seq - frame.ref_seq <= bitstream.MAX_REF_GAP


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 44), st.integers(0, 7))
def test_fuzz_every_bit_flip_and_truncation_of_a_v2_frame(cut, bit):
    data = bitstream.pack(v2())
    flipped = bytearray(data)
    flipped[cut] ^= 1 << bit
    for bad in (bytes(flipped), data[:cut], data + bytes(cut + 1)):
        with pytest.raises(BitstreamError):
            bitstream.unpack(bad)
