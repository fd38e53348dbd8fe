"""The SPIC frame: the bytes a camera sends for one image. Format version 1.

A frame is a 30-byte header, the entropy-coded payload, and a 4-byte CRC-32 trailer: 34 bytes of
overhead in all (a 224² frame at 0.1 bpp is only ~630 bytes, so every byte counts). All integers
are little-endian and unsigned.

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

A whole-image frame's encoder input is the captured image padded on the right and at the bottom
up to the next multiple of the stride (``padded_size``), so image_width x image_height says how
much of a reconstruction is picture and how much padding.

bpp (bits per pixel) of a frame = 8 · (34 + payload_len) / (H·stride · W·stride): the whole
frame, header included, over the pixels the encoder saw.

Rules a reader follows, in this order, raising ``BitstreamError`` (a ``ValueError``) at the
first that fails, before it allocates anything sized by the frame:

1. at least 34 bytes (``truncated``); magic (``bad_magic``); version 1 (``unsupported_version``);
2. exactly 34 + payload_len bytes (``truncated`` if fewer, ``length_mismatch`` if more), with
   payload_len ≤ 8 MiB (``limits``);
3. the CRC-32 matches (``crc_mismatch``); checked before the fields below, so a flipped bit is
   reported as corruption, not as a strange value;
4. codec known (``unknown_codec``), qf in 1..255, stride_log2 ≤ 7, and C, H, W in 1..1024 with
   C·H·W ≤ 2**22 (``limits``).

The latent symbols are the codec's business: ``shared.codecs`` decodes the payload against the
model's frequency tables, and checks that it holds exactly C·H·W symbols.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from shared.codecs import CODEC_IDS
from shared.errors import BitstreamError

MAGIC = b"SPIC"
VERSION = 1
HEADER = struct.Struct("<4sBBBB8sHHHHHI")
HEADER_SIZE = HEADER.size  # 30
TRAILER_SIZE = 4
OVERHEAD = HEADER_SIZE + TRAILER_SIZE  # 34
MODEL_ID_BYTES = 8
MAX_LATENT_SIDE = 1024
MAX_CHANNELS = 1024
MAX_SYMBOLS = 1 << 22
MAX_PAYLOAD = 8 << 20
MAX_IMAGE_SIDE = 0xFFFF

MAX_STRIDE_LOG2 = 7

assert HEADER_SIZE == 30


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
    def nbytes(self) -> int:
        return OVERHEAD + len(self.payload)


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


def pack(frame: Frame) -> bytes:
    """Serialize a frame. Raises ``BitstreamError`` if a field is outside the format's limits."""
    stride_log2 = frame.stride.bit_length() - 1
    if frame.stride < 1 or frame.stride != 1 << stride_log2:
        raise BitstreamError("limits", f"stride {frame.stride} is not a power of two")
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
        VERSION,
        frame.codec,
        frame.qf,
        stride_log2,
        frame.model_id,
        *frame.latent_shape,
        iw,
        ih,
        len(frame.payload),
    )
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
    if version != VERSION:
        raise BitstreamError(
            "unsupported_version", f"format version {version}; this reader knows {VERSION}"
        )
    if payload_len > MAX_PAYLOAD:
        raise BitstreamError(
            "limits", f"declared payload of {payload_len} bytes exceeds {MAX_PAYLOAD}"
        )
    expected = OVERHEAD + payload_len
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
    return Frame(
        codec=codec,
        qf=qf,
        model_id=model_id,
        latent_shape=(c, h, w),
        image_size=(iw, ih),
        payload=data[HEADER_SIZE : HEADER_SIZE + payload_len],
        stride=1 << stride_log2,
        version=version,
    )
