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


def key(**overrides) -> bitstream.Frame:
    fields = dict(
        codec=2,
        qf=4,
        model_id=b"\x01" * 8,
        latent_shape=(32, 14, 14),
        image_size=(640, 360),
        payload=bytes(range(40)),
        version=2,
        frame_type="key",
        stream_id=7,
        seq=1000,
        ref_seq=1000,
    )
    fields.update(overrides)
    return bitstream.Frame(**fields)


def delta(**overrides) -> bitstream.Frame:
    """A delta as a reader returns it: no fields of its own until it inherits its reference's."""
    fields = dict(
        codec=2,
        qf=0,
        model_id=b"",
        latent_shape=(0, 0, 0),
        image_size=(0, 0),
        stride=1,
        frame_type="delta",
        ref_seq=999,
    )
    return key(**(fields | overrides))


@pytest.mark.parametrize(
    ("frame", "overhead"),
    [
        (key(), 43),
        (key(codec=1), 43),
        (delta(), 22),
        (delta(frame_type="skip", payload=b""), 22),
        (delta(seq=0xFFFFFFFF, ref_seq=0xFFFFFFFF - 0xFFFF, stream_id=0xFFFF), 22),
        (delta(seq=1, ref_seq=0), 22),
    ],
)
def test_v2_round_trip_and_overhead(frame, overhead):
    data = bitstream.pack(frame)
    assert len(data) == overhead + len(frame.payload) == frame.nbytes
    assert bitstream.unpack(data) == frame


def test_a_delta_inherits_its_references_fields():
    ref = key()
    got = bitstream.unpack(bitstream.pack(delta(seq=1001, ref_seq=1000))).inherit(ref)
    assert (got.qf, got.model_id, got.latent_shape, got.image_size, got.stride) == (
        4,
        b"\x01" * 8,
        (32, 14, 14),
        (640, 360),
        16,
    )
    assert got.input_size == (224, 224)


@pytest.mark.parametrize(
    "frame",
    [
        key(ref_seq=999),  # a key frame refers to itself
        delta(ref_seq=1000),  # a delta refers to an earlier frame
        delta(ref_seq=1001),
        delta(seq=70000, ref_seq=70000 - 0x10000),  # too far back
        delta(seq=3, ref_seq=-1),  # before the stream began
        delta(frame_type="skip"),  # a skip has no payload
        delta(payload=b""),  # a delta has one
        delta(codec=1),  # a delta is rANS
        delta(seq=1 << 32, ref_seq=(1 << 32) - 1),
        delta(stream_id=1 << 16),
    ],
)
def test_v2_rules_refuse_contradictions(frame):
    with pytest.raises(BitstreamError) as err:
        bitstream.pack(frame)
    assert err.value.reason == "stream"


def forge(kind: int, seq: int, gap: int, payload: bytes, payload_len: int | None = None) -> bytes:
    """A version-2 frame with arbitrary stream fields and a valid CRC, as a hostile sender makes."""
    n = len(payload) if payload_len is None else payload_len
    body = struct.pack("<4sBBHIHI", b"SPIC", 2, kind, 0, seq, gap, n)
    if kind == 0:
        body += bitstream.FIELDS.pack(2, 4, 4, b"\x01" * 8, 32, 14, 14, 640, 360)
    body += payload
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize(
    ("kind", "seq", "gap", "payload", "reason"),
    [
        (0, 5, 1, b"x", "stream"),
        (1, 5, 0, b"x", "stream"),
        (1, 5, 6, b"x", "stream"),
        (2, 5, 1, b"x", "stream"),
        (1, 5, 1, b"", "stream"),
        (4, 5, 1, b"x", "stream"),  # no frame type 4
        (3, 5, 1, b"", "stream"),  # a cdelta has a payload
        (3, 5, 0, b"x", "stream"),  # and refers to an earlier frame
    ],
)
def test_forged_stream_fields_are_refused(kind, seq, gap, payload, reason):
    with pytest.raises(BitstreamError) as err:
        bitstream.unpack(forge(kind, seq, gap, payload))
    assert err.value.reason == reason


def test_a_forged_key_frame_still_meets_the_version_1_rules():
    body = struct.pack("<4sBBHIHI", b"SPIC", 2, 0, 0, 5, 0, 0)
    body += bitstream.FIELDS.pack(2, 4, 4, b"\x01" * 8, 1024, 1024, 1024, 640, 360)
    with pytest.raises(BitstreamError) as err:
        bitstream.unpack(body + struct.pack("<I", zlib.crc32(body)))
    assert err.value.reason == "limits"


def test_v1_frames_still_read_as_key_frames_outside_a_stream():
    frames = sorted(FIELD.glob("*.spic"))
    assert frames
    for path in frames:
        frame = bitstream.unpack(path.read_bytes())
        assert (frame.version, frame.frame_type, frame.overhead) == (1, "key", 34)
        assert bitstream.pack(frame) == path.read_bytes()


def test_a_v1_frame_cannot_be_a_delta():
    with pytest.raises(BitstreamError):
        bitstream.pack(key(version=1, frame_type="delta", ref_seq=999))


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_after_a_v2_magic(data):
    with contextlib.suppress(BitstreamError):
        bitstream.unpack(b"SPIC\x02" + data)


@settings(max_examples=1500, deadline=None)
@given(
    st.integers(0, 255),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=64),
    st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)),
)
def test_fuzz_v2_fields_with_a_valid_crc(kind, seq, gap, payload, payload_len):
    """Whatever a hostile sender puts in the stream fields, a reader answers BitstreamError or a
    frame that satisfies every rule."""
    try:
        frame = bitstream.unpack(forge(kind, seq, gap, payload, payload_len))
    except BitstreamError:
        return
    assert frame.frame_type in bitstream.FRAME_TYPES
    if frame.frame_type == "key":
        assert frame.ref_seq == frame.seq
    else:
        assert 1 <= frame.seq - frame.ref_seq <= bitstream.MAX_REF_GAP
        assert frame.ref_seq >= 0
    assert (frame.frame_type == "skip") == (not frame.payload) or frame.frame_type == "key"


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([key(), delta()]), st.integers(0, 1000), st.integers(0, 7))
def test_fuzz_every_bit_flip_and_truncation_of_a_v2_frame(frame, where, bit):
    data = bitstream.pack(frame)
    cut = where % len(data)
    flipped = bytearray(data)
    flipped[cut] ^= 1 << bit
    for bad in (bytes(flipped), data[:cut], data + bytes(cut + 1)):
        with pytest.raises(BitstreamError):
            bitstream.unpack(bad)


def test_spic_inspect_describes_stream_frames(tmp_path, capsys):
    import json

    from shared.inspect_cli import main

    paths = []
    for name, frame in (
        ("key", key()),
        ("delta", delta()),
        ("skip", delta(frame_type="skip", payload=b"")),
    ):
        paths.append(tmp_path / f"{name}.spic")
        paths[-1].write_bytes(bitstream.pack(frame))
    assert main([str(p) for p in paths]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["frame_type"] for d in lines] == ["key", "delta", "skip"]
    assert [d["total_bytes"] for d in lines] == [43 + 40, 22 + 40, 22]
    assert lines[0]["qf"] == 4 and "qf" not in lines[1]  # a delta's QF is its reference's
