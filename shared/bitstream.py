"""The SPIC frame: the bytes a camera sends for one image. Format versions 1 and 2.

A frame is a header, the entropy-coded payload, and a 4-byte CRC-32 trailer. Version 1 (a photo
coded alone) has a 30-byte header: 34 bytes of overhead in all (a 224² frame at 0.1 bpp is only
~630 bytes, so every byte counts). Version 2 (a frame of a stream) adds 11 bytes of stream fields
after them: 45 bytes of overhead. All integers are little-endian and unsigned. A reader accepts
both versions; a writer writes version 1 unless the frame belongs to a stream.

    ┌───────────────────────────── header (30 bytes) ─────────────────────────────┐
    │ off  size  field          meaning                                           │
    │   0     4  magic          b"SPIC"                                           │
    │   4     1  version        format version, 1 or 2                            │
    │   5     1  codec          entropy codec id: 1 Huffman, 2 rANS               │
    │   6     1  qf             quantization factor, 1..255 (symbols in [0, qf])  │
    │   7     1  stride_log2    log2 of the encoder's stride, 0..7: the encoder   │
    │                           input is (H·stride) x (W·stride) pixels           │
    │   8     8  model_id       first 8 bytes of the model bundle's SHA-256       │
    │  16     2  channels       latent C, 1..1024                                 │
    │  18     2  height         latent H, 1..1024                                 │
    │  20     2  width          latent W, 1..1024                                 │
    │  22     2  image_width    width of the image the camera captured, 0..65535  │
    │  24     2  image_height   height of the image the camera captured           │
    │  26     4  payload_len    bytes of payload that follow, ≤ 8 MiB             │
    ├──────────────────── version 2 only: stream fields (11 bytes) ───────────────┤
    │  30     1  frame_type     0 key, 1 delta, 2 skip                            │
    │  31     2  stream_id      which of the device's streams, 0..65535           │
    │  33     4  seq            this frame's sequence number in the stream        │
    │  37     4  ref_seq        the frame it is coded against (key: = seq)        │
    ├─────────────────────────────────────────────────────────────────────────────┤
    │  h      n  payload        codec body (see shared.codecs), n = payload_len   │
    ├─────────────────────────────────────────────────────────────────────────────┤
    │  h+n    4  crc32          CRC-32 (zlib/PNG polynomial) of bytes [0, h+n)    │
    └─────────────────────────────────────────────────────────────────────────────┘
    h = 30 (version 1) or 41 (version 2)

Frame types (version 2; a version-1 frame is a key frame outside any stream):

* key: self-contained; its payload is a version-1 payload (the codec body of its symbols).
* delta: the frame's symbols coded against those of frame ``ref_seq`` of the same device and
  stream, which the reader must hold (``shared.stream`` specifies the payload; rANS only).
* skip: no payload; the frame's symbols are those of frame ``ref_seq``.

A whole-image frame's encoder input is the captured image padded on the right and at the bottom
up to the next multiple of the stride (``padded_size``), so image_width x image_height says how
much of a reconstruction is picture and how much padding.

bpp (bits per pixel) of a frame = 8 · (overhead + payload_len) / (H·stride · W·stride): the whole
frame, header included, over the pixels the encoder saw.

Rules a reader follows, in this order, raising ``BitstreamError`` (a ``ValueError``) at the
first that fails, before it allocates anything sized by the frame:

1. at least 34 bytes (``truncated``); magic (``bad_magic``); version 1 or 2
   (``unsupported_version``); a version-2 frame at least 45 bytes (``truncated``);
2. exactly overhead + payload_len bytes (``truncated`` if fewer, ``length_mismatch`` if more),
   with payload_len ≤ 8 MiB (``limits``);
3. the CRC-32 matches (``crc_mismatch``); checked before the fields below, so a flipped bit is
   reported as corruption, not as a strange value;
4. codec known (``unknown_codec``), qf in 1..255, stride_log2 ≤ 7, and C, H, W in 1..1024 with
   C·H·W ≤ 2**22 (``limits``);
5. version 2 (``stream``): frame_type 0..2; a key frame has ref_seq = seq; a delta or skip frame
   has 1 ≤ seq − ref_seq ≤ 65535; a skip frame has no payload; a delta frame has codec 2 (rANS)
   and a payload.

The latent symbols are the codec's business: ``shared.codecs`` decodes the payload against the
model's frequency tables, and checks that it holds exactly C·H·W symbols.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Literal

from shared.codecs import CODEC_IDS
from shared.errors import BitstreamError

MAGIC = b"SPIC"
VERSION = 1  # what a frame outside a stream is written as
STREAM_VERSION = 2
VERSIONS = (VERSION, STREAM_VERSION)
HEADER = struct.Struct("<4sBBBB8sHHHHHI")
STREAM_FIELDS = struct.Struct("<BHII")
HEADER_SIZE = HEADER.size  # 30
HEADER_SIZE_V2 = HEADER_SIZE + STREAM_FIELDS.size  # 41
TRAILER_SIZE = 4
OVERHEAD = HEADER_SIZE + TRAILER_SIZE  # 34
OVERHEAD_V2 = HEADER_SIZE_V2 + TRAILER_SIZE  # 45
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

FrameType = Literal["key", "delta", "skip"]
FRAME_TYPES: tuple[FrameType, ...] = ("key", "delta", "skip")

assert HEADER_SIZE == 30 and HEADER_SIZE_V2 == 41


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
    # Version 2 only (a version-1 frame reads as a key frame of no stream):
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
        return OVERHEAD_V2 if self.version == STREAM_VERSION else OVERHEAD

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


def _check_stream(
    frame_type: int, stream_id: int, seq: int, ref_seq: int, codec: int, payload_len: int
) -> None:
    """Rule 5: the stream fields of a version-2 frame agree with each other."""
    if not 0 <= frame_type < len(FRAME_TYPES):
        raise BitstreamError("stream", f"frame type {frame_type} is not 0 key, 1 delta, 2 skip")
    if not (0 <= stream_id <= MAX_STREAM_ID and 0 <= seq <= MAX_SEQ and 0 <= ref_seq <= MAX_SEQ):
        raise BitstreamError("stream", "stream id or sequence number out of range")
    kind = FRAME_TYPES[frame_type]
    if kind == "key":
        if ref_seq != seq:
            raise BitstreamError("stream", f"key frame {seq} names reference {ref_seq}")
        return
    if not 1 <= seq - ref_seq <= MAX_REF_GAP:
        raise BitstreamError(
            "stream", f"{kind} frame {seq} refers to {ref_seq}: not 1..{MAX_REF_GAP} frames back"
        )
    if kind == "skip" and payload_len:
        raise BitstreamError("stream", f"skip frame {seq} carries {payload_len} payload bytes")
    if kind == "delta" and (codec != RANS_ID or not payload_len):
        raise BitstreamError("stream", f"delta frame {seq} needs codec {RANS_ID} and a payload")


def pack(frame: Frame) -> bytes:
    """Serialize a frame. Raises ``BitstreamError`` if a field is outside the format's limits."""
    stride_log2 = frame.stride.bit_length() - 1
    if frame.stride < 1 or frame.stride != 1 << stride_log2:
        raise BitstreamError("limits", f"stride {frame.stride} is not a power of two")
    if frame.version not in VERSIONS:
        raise BitstreamError("unsupported_version", f"format version {frame.version}")
    _check_fields(frame.codec, frame.qf, stride_log2, frame.latent_shape)
    if len(frame.model_id) != MODEL_ID_BYTES:
        raise BitstreamError("limits", f"model id must be {MODEL_ID_BYTES} bytes")
    iw, ih = frame.image_size
    if not (0 <= iw <= MAX_IMAGE_SIDE and 0 <= ih <= MAX_IMAGE_SIDE):
        raise BitstreamError("limits", f"image size {frame.image_size} outside 0..{MAX_IMAGE_SIDE}")
    if len(frame.payload) > MAX_PAYLOAD:
        raise BitstreamError(
            "limits", f"payload of {len(frame.payload)} bytes exceeds {MAX_PAYLOAD}"
        )
    head = HEADER.pack(
        MAGIC,
        frame.version,
        frame.codec,
        frame.qf,
        stride_log2,
        frame.model_id,
        *frame.latent_shape,
        iw,
        ih,
        len(frame.payload),
    )
    if frame.version == STREAM_VERSION:
        if frame.frame_type not in FRAME_TYPES:
            raise BitstreamError("stream", f"frame type {frame.frame_type!r}")
        kind = FRAME_TYPES.index(frame.frame_type)
        fields = (kind, frame.stream_id, frame.seq, frame.ref_seq)
        _check_stream(*fields, frame.codec, len(frame.payload))
        head += STREAM_FIELDS.pack(*fields)
    elif frame.frame_type != "key":
        raise BitstreamError("stream", "a version-1 frame can only be a key frame")
    body = head + frame.payload
    return body + struct.pack("<I", zlib.crc32(body))


def unpack(data: bytes | bytearray | memoryview) -> Frame:
    """Parse and verify a frame; raises ``BitstreamError`` and nothing else on any bad input."""
    data = bytes(data)
    if len(data) < OVERHEAD:
        raise BitstreamError(
            "truncated", f"{len(data)} bytes is shorter than the {OVERHEAD}-byte minimum frame"
        )
    magic, version, codec, qf, stride_log2, model_id, c, h, w, iw, ih, payload_len = (
        HEADER.unpack_from(data)
    )
    if magic != MAGIC:
        raise BitstreamError("bad_magic", f"bad magic {magic!r}, expected {MAGIC!r}")
    if version not in VERSIONS:
        raise BitstreamError(
            "unsupported_version", f"format version {version}; this reader knows {VERSIONS}"
        )
    overhead, head = OVERHEAD, HEADER_SIZE
    if version == STREAM_VERSION:
        overhead, head = OVERHEAD_V2, HEADER_SIZE_V2
        if len(data) < overhead:
            raise BitstreamError(
                "truncated", f"{len(data)} bytes is shorter than a {overhead}-byte stream frame"
            )
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
    _check_fields(codec, qf, stride_log2, (c, h, w))
    kind, stream_id, seq, ref_seq = 0, 0, 0, 0
    if version == STREAM_VERSION:
        kind, stream_id, seq, ref_seq = STREAM_FIELDS.unpack_from(data, HEADER_SIZE)
        _check_stream(kind, stream_id, seq, ref_seq, codec, payload_len)
    return Frame(
        codec=codec,
        qf=qf,
        model_id=model_id,
        latent_shape=(c, h, w),
        image_size=(iw, ih),
        payload=data[head : head + payload_len],
        stride=1 << stride_log2,
        version=version,
        frame_type=FRAME_TYPES[kind],
        stream_id=stream_id,
        seq=seq,
        ref_seq=ref_seq,
    )
