"""The SPIC frame: the bytes a camera sends for one image. Format versions 1 and 2.

A frame is a header, the entropy-coded payload, and a 4-byte CRC-32 trailer. Version 1 (a photo
coded alone) has a 30-byte header: 34 bytes of overhead in all (a 224² frame at 0.1 bpp is only
~630 bytes, so every byte counts). Version 2 is a frame of a stream: a key frame carries the
version-1 fields after its stream fields (43 bytes of overhead); a delta or skip frame carries
only the stream fields (22 bytes of overhead), its codec, QF, model, latent shape and image size
being its reference's. All integers are little-endian and unsigned. A reader accepts both
versions; a writer writes version 1 unless the frame belongs to a stream.

Version 1:

    ┌───────────────────────────── header (30 bytes) ─────────────────────────────┐
    │ off  size  field          meaning                                           │
    │   0     4  magic          b"SPIC"                                           │
    │   4     1  version        format version, 1                                 │
    │   5     1  codec          entropy codec id: 1 Huffman, 2 rANS               │
    │   6     1  qf             quantization factor, 1..255 (symbols in [0, qf])  │
    │   7     1  stride_log2    log2 of the encoder's stride, 0..7: the encoder   │
    │                           input is (H·stride) x (W·stride) pixels           │
    │   8     8  model_id       the codec id: 8 bytes of SHA-256 over the codec   │
    │  16     2  channels       latent C, 1..1024                                 │
    │  18     2  height         latent H, 1..1024                                 │
    │  20     2  width          latent W, 1..1024                                 │
    │  22     2  image_width    width of the image the camera captured, 0..65535  │
    │  24     2  image_height   height of the image the camera captured           │
    │  26     4  payload_len    bytes of payload that follow, ≤ 8 MiB             │
    ├─────────────────────────────────────────────────────────────────────────────┤
    │  30     n  payload        codec body (see shared.codecs), n = payload_len   │
    ├─────────────────────────────────────────────────────────────────────────────┤
    │ 30+n    4  crc32          CRC-32 (zlib/PNG polynomial) of bytes [0, 30+n)   │
    └─────────────────────────────────────────────────────────────────────────────┘

Version 2:

    ┌─────────────────────────── stream header (18 bytes) ────────────────────────┐
    │ off  size  field          meaning                                           │
    │   0     4  magic          b"SPIC"                                           │
    │   4     1  version        format version, 2                                 │
    │   5     1  frame_type     0 key, 1 delta, 2 skip, 3 cdelta                  │
    │   6     2  stream_id      which of the device's streams, 0..65535           │
    │   8     4  seq            this frame's sequence number in its stream        │
    │  12     2  ref_gap        seq − ref_seq: 0 for a key frame, else 1..65535   │
    │  14     4  payload_len    bytes of payload that follow, ≤ 8 MiB             │
    ├────────────────────── key frames only (21 bytes) ───────────────────────────┤
    │  18    21  fields         codec, qf, stride_log2, model_id, channels,       │
    │                           height, width, image_width, image_height: the     │
    │                           version-1 fields at offsets 5..25, same sizes     │
    ├─────────────────────────────────────────────────────────────────────────────┤
    │  h      n  payload        key: a version-1 payload; delta, cdelta:          │
    │                           shared.stream; skip: none (n = 0)                 │
    ├─────────────────────────────────────────────────────────────────────────────┤
    │  h+n    4  crc32          CRC-32 of bytes [0, h+n); h = 39 key, 18 otherwise │
    └─────────────────────────────────────────────────────────────────────────────┘

Frame types (a version-1 frame is a key frame outside any stream):

* key: self-contained, ref_seq = seq.
* delta: the frame's symbols coded against those of frame ref_seq = seq − ref_gap of the same
  device and stream, which the reader must hold; rANS only (``shared.stream`` specifies it).
* skip: the frame's symbols are those of frame ref_seq ("same as N").
* cdelta: a delta whose payload also reads the change frame ref_seq made to its own reference,
  which the reader holds with it (``shared.stream``); what an edge writes since type 3 exists,
  type 1 staying readable for the edges already deployed.

A whole-image frame's encoder input is the captured image padded on the right and at the bottom
up to the next multiple of the stride (``padded_size``), so image_width x image_height says how
much of a reconstruction is picture and how much padding.

bpp (bits per pixel) of a frame = 8 · (overhead + payload_len) / (H·stride · W·stride): the whole
frame, header included, over the pixels the encoder saw.

Rules a reader follows, in this order, raising ``BitstreamError`` (a ``ValueError``) at the
first that fails, before it allocates anything sized by the frame:

1. at least 22 bytes (``truncated``); magic (``bad_magic``); version 1 or 2
   (``unsupported_version``); frame_type 0..3 (``stream``); at least the overhead of its
   version and type (``truncated``);
2. exactly overhead + payload_len bytes (``truncated`` if fewer, ``length_mismatch`` if more),
   with payload_len ≤ 8 MiB (``limits``);
3. the CRC-32 matches (``crc_mismatch``); checked before the fields below, so a flipped bit is
   reported as corruption, not as a strange value;
4. a frame with the version-1 fields: codec known (``unknown_codec``), qf in 1..255,
   stride_log2 ≤ 7, and C, H, W in 1..1024 with C·H·W ≤ 2**22 (``limits``);
5. version 2 (``stream``): a key frame has ref_gap 0, a delta or skip 1..65535 and
   ref_gap ≤ seq; a skip frame has no payload, a delta or cdelta frame has one.

The latent symbols are the codec's business: ``shared.codecs`` decodes the payload against the
model's frequency tables, and checks that it holds exactly C·H·W symbols.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, replace
from typing import Literal

from shared.codecs import CODEC_IDS
from shared.errors import BitstreamError

MAGIC = b"SPIC"
VERSION = 1  # what a frame outside a stream is written as
STREAM_VERSION = 2
VERSIONS = (VERSION, STREAM_VERSION)
HEADER = struct.Struct("<4sBBBB8sHHHHHI")
FIELDS = struct.Struct("<BBB8sHHHHH")  # HEADER's fields from codec to image_height
STREAM_HEADER = struct.Struct("<4sBBHIHI")
HEADER_SIZE = HEADER.size  # 30
STREAM_HEADER_SIZE = STREAM_HEADER.size  # 18
KEY_HEADER_SIZE = STREAM_HEADER_SIZE + FIELDS.size  # 39
TRAILER_SIZE = 4
OVERHEAD = HEADER_SIZE + TRAILER_SIZE  # 34
KEY_OVERHEAD = KEY_HEADER_SIZE + TRAILER_SIZE  # 43
DELTA_OVERHEAD = STREAM_HEADER_SIZE + TRAILER_SIZE  # 22: a delta's or skip's
MIN_FRAME = DELTA_OVERHEAD
MODEL_ID_BYTES = 8
MAX_LATENT_SIDE = 1024
MAX_CHANNELS = 1024
MAX_SYMBOLS = 1 << 22
MAX_PAYLOAD = 8 << 20
MAX_IMAGE_SIDE = 0xFFFF
MAX_STREAM_ID = 0xFFFF
MAX_SEQ = 0xFFFFFFFF
MAX_REF_GAP = 0xFFFF  # a delta or skip refers at most this many frames back

MAX_STRIDE_LOG2 = 7
RANS_ID = 2

FrameType = Literal["key", "delta", "skip", "cdelta"]
FRAME_TYPES: tuple[FrameType, ...] = ("key", "delta", "skip", "cdelta")  # byte: the index

assert (HEADER_SIZE, STREAM_HEADER_SIZE, KEY_HEADER_SIZE) == (30, 18, 39)


@dataclass(frozen=True)
class Frame:
    codec: int
    qf: int
    model_id: bytes
    latent_shape: tuple[int, int, int]
    image_size: tuple[int, int]  # (width, height) of the captured image
    payload: bytes
    stride: int = 16
    version: int = VERSION
    # Version 2 only (a version-1 frame reads as a key frame of no stream). A delta or skip
    # frame as read has no fields of its own above (qf 0, empty model id, shape (0, 0, 0)) until
    # ``inherit`` gives it its reference's.
    frame_type: FrameType = "key"
    stream_id: int = 0
    seq: int = 0
    ref_seq: int = 0

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the image the encoder saw."""
        _, h, w = self.latent_shape
        return w * self.stride, h * self.stride

    @property
    def bpp(self) -> float:
        """Bits of the whole frame per pixel of the encoder's input."""
        w, h = self.input_size
        return 8 * self.nbytes / (w * h)

    @property
    def model_id_hex(self) -> str:
        return self.model_id.hex()

    @property
    def overhead(self) -> int:
        if self.version == VERSION:
            return OVERHEAD
        return KEY_OVERHEAD if self.frame_type == "key" else DELTA_OVERHEAD

    def inherit(self, reference: Frame) -> Frame:
        """A delta or skip frame with its reference's codec, QF, model, shape and image size."""
        return replace(
            self,
            codec=RANS_ID,
            qf=reference.qf,
            model_id=reference.model_id,
            latent_shape=reference.latent_shape,
            image_size=reference.image_size,
            stride=reference.stride,
        )

    @property
    def nbytes(self) -> int:
        return self.overhead + len(self.payload)


def padded_size(width: int, height: int, stride: int) -> tuple[int, int]:
    """The encoder input of a whole ``width`` x ``height`` image: each side rounded up to the stride."""
    return -(-width // stride) * stride, -(-height // stride) * stride


def model_id_from_hex(text: str) -> bytes:
    raw = bytes.fromhex(text)
    if len(raw) != MODEL_ID_BYTES:
        raise ValueError(
            f"a model id is {MODEL_ID_BYTES} bytes ({2 * MODEL_ID_BYTES} hex digits), got {text!r}"
        )
    return raw


def _check_fields(codec: int, qf: int, stride_log2: int, shape: tuple[int, int, int]) -> None:
    if stride_log2 > MAX_STRIDE_LOG2:
        raise BitstreamError("limits", f"stride 2**{stride_log2} exceeds 2**{MAX_STRIDE_LOG2}")
    if codec not in CODEC_IDS:
        raise BitstreamError(
            "unknown_codec", f"unknown codec id {codec}; known: {sorted(CODEC_IDS)}"
        )
    if not 1 <= qf <= 255:
        raise BitstreamError("limits", f"QF {qf} outside 1..255")
    c, h, w = shape
    if not (1 <= c <= MAX_CHANNELS and 1 <= h <= MAX_LATENT_SIDE and 1 <= w <= MAX_LATENT_SIDE):
        raise BitstreamError(
            "limits", f"latent shape {shape} outside 1..{MAX_CHANNELS} x 1..{MAX_LATENT_SIDE}²"
        )
    if c * h * w > MAX_SYMBOLS:
        raise BitstreamError("limits", f"latent shape {shape} has over {MAX_SYMBOLS} symbols")


def _check_stream(kind: FrameType, seq: int, ref_gap: int, payload_len: int) -> None:
    """Rule 5: the stream fields of a version-2 frame agree with each other."""
    if kind == "key":
        if ref_gap:
            raise BitstreamError("stream", f"key frame {seq} refers {ref_gap} frames back")
        return
    if not 1 <= ref_gap <= min(seq, MAX_REF_GAP):
        raise BitstreamError(
            "stream", f"{kind} frame {seq} refers {ref_gap} frames back: not 1..min(seq, 65535)"
        )
    if kind == "skip" and payload_len:
        raise BitstreamError("stream", f"skip frame {seq} carries {payload_len} payload bytes")
    if kind in ("delta", "cdelta") and not payload_len:
        raise BitstreamError("stream", f"{kind} frame {seq} has no payload")


def _fields(frame: Frame) -> bytes:
    """The version-1 fields of a frame (codec to image size), checked."""
    stride_log2 = frame.stride.bit_length() - 1
    if frame.stride < 1 or frame.stride != 1 << stride_log2:
        raise BitstreamError("limits", f"stride {frame.stride} is not a power of two")
    _check_fields(frame.codec, frame.qf, stride_log2, frame.latent_shape)
    if len(frame.model_id) != MODEL_ID_BYTES:
        raise BitstreamError("limits", f"model id must be {MODEL_ID_BYTES} bytes")
    iw, ih = frame.image_size
    if not (0 <= iw <= MAX_IMAGE_SIDE and 0 <= ih <= MAX_IMAGE_SIDE):
        raise BitstreamError("limits", f"image size {frame.image_size} outside 0..{MAX_IMAGE_SIDE}")
    return FIELDS.pack(
        frame.codec, frame.qf, stride_log2, frame.model_id, *frame.latent_shape, iw, ih
    )


def pack(frame: Frame) -> bytes:
    """Serialize a frame. Raises ``BitstreamError`` if a field is outside the format's limits."""
    if len(frame.payload) > MAX_PAYLOAD:
        raise BitstreamError(
            "limits", f"payload of {len(frame.payload)} bytes exceeds {MAX_PAYLOAD}"
        )
    n = len(frame.payload)
    if frame.version == VERSION:
        if frame.frame_type != "key":
            raise BitstreamError("stream", "a version-1 frame can only be a key frame")
        head = MAGIC + bytes([VERSION]) + _fields(frame) + struct.pack("<I", n)
    elif frame.version == STREAM_VERSION:
        if frame.frame_type not in FRAME_TYPES:
            raise BitstreamError("stream", f"frame type {frame.frame_type!r}")
        gap = frame.seq - frame.ref_seq
        if not (0 <= frame.stream_id <= MAX_STREAM_ID and 0 <= frame.seq <= MAX_SEQ):
            raise BitstreamError("stream", "stream id or sequence number out of range")
        _check_stream(frame.frame_type, frame.seq, gap, n)
        kind = FRAME_TYPES.index(frame.frame_type)
        head = STREAM_HEADER.pack(MAGIC, STREAM_VERSION, kind, frame.stream_id, frame.seq, gap, n)
        if frame.frame_type == "key":
            head += _fields(frame)
        elif frame.codec != RANS_ID:
            raise BitstreamError("stream", f"a {frame.frame_type} frame is coded with rANS")
    else:
        raise BitstreamError("unsupported_version", f"format version {frame.version}")
    body = head + frame.payload
    return body + struct.pack("<I", zlib.crc32(body))


def _check_length(data: bytes, overhead: int, payload_len: int) -> None:
    """Rules 2 and 3: the declared length, then the CRC."""
    if payload_len > MAX_PAYLOAD:
        raise BitstreamError(
            "limits", f"declared payload of {payload_len} bytes exceeds {MAX_PAYLOAD}"
        )
    expected = overhead + payload_len
    if len(data) < expected:
        raise BitstreamError("truncated", f"frame is {len(data)} bytes, header declares {expected}")
    if len(data) > expected:
        raise BitstreamError(
            "length_mismatch", f"frame is {len(data)} bytes, header declares {expected}"
        )
    (crc,) = struct.unpack_from("<I", data, expected - TRAILER_SIZE)
    actual = zlib.crc32(memoryview(data)[: expected - TRAILER_SIZE])
    if crc != actual:
        raise BitstreamError(
            "crc_mismatch", f"CRC-32 mismatch: trailer {crc:08x}, bytes {actual:08x}"
        )


def unpack(data: bytes | bytearray | memoryview) -> Frame:
    """Parse and verify a frame; raises ``BitstreamError`` and nothing else on any bad input."""
    data = bytes(data)
    if len(data) < MIN_FRAME:
        raise BitstreamError(
            "truncated", f"{len(data)} bytes is shorter than the {MIN_FRAME}-byte minimum frame"
        )
    if data[:4] != MAGIC:
        raise BitstreamError("bad_magic", f"bad magic {data[:4]!r}, expected {MAGIC!r}")
    version = data[4]
    if version not in VERSIONS:
        raise BitstreamError(
            "unsupported_version", f"format version {version}; this reader knows {VERSIONS}"
        )
    kind: FrameType = "key"
    stream_id = seq = gap = 0
    if version == VERSION:
        overhead, fields_at = OVERHEAD, 5
        if len(data) < overhead:
            raise BitstreamError(
                "truncated", f"{len(data)} bytes is shorter than a {overhead}-byte frame"
            )
        (payload_len,) = struct.unpack_from("<I", data, 26)
    else:
        _, _, kind_id, stream_id, seq, gap, payload_len = STREAM_HEADER.unpack_from(data)
        if kind_id >= len(FRAME_TYPES):
            raise BitstreamError(
                "stream", f"frame type {kind_id} is not 0 key, 1 delta, 2 skip, 3 cdelta"
            )
        kind = FRAME_TYPES[kind_id]
        overhead, fields_at = (KEY_OVERHEAD, STREAM_HEADER_SIZE) if kind == "key" else (0, 0)
        overhead = overhead or DELTA_OVERHEAD
        if len(data) < overhead:
            raise BitstreamError(
                "truncated", f"{len(data)} bytes is shorter than a {overhead}-byte {kind} frame"
            )
    _check_length(data, overhead, payload_len)
    head = overhead - TRAILER_SIZE
    frame = Frame(
        codec=RANS_ID,
        qf=0,
        model_id=b"",
        latent_shape=(0, 0, 0),
        image_size=(0, 0),
        payload=data[head : head + payload_len],
        stride=1,
        version=version,
        frame_type=kind,
        stream_id=stream_id,
        seq=seq,
        ref_seq=seq - gap,
    )
    if version == STREAM_VERSION:
        _check_stream(kind, seq, gap, payload_len)
    if fields_at:
        codec, qf, stride_log2, model_id, c, h, w, iw, ih = FIELDS.unpack_from(data, fields_at)
        _check_fields(codec, qf, stride_log2, (c, h, w))
        frame = replace(
            frame,
            codec=codec,
            qf=qf,
            model_id=model_id,
            latent_shape=(c, h, w),
            image_size=(iw, ih),
            stride=1 << stride_log2,
        )
    return frame
