"""The one exception every malformed SPIC input raises.

``BitstreamError`` is a ``ValueError`` subclass. Parsing a frame, decoding an entropy-coded
payload or reading a varint raises it, and nothing else, for any input bytes. ``reason`` is a
stable machine-readable code (the cloud turns it into the ``type`` of a problem+json answer);
the message says in words what is wrong.

=====================  ==========================================================
reason                 meaning
=====================  ==========================================================
``truncated``          fewer bytes than the header or the declared payload needs
``bad_magic``          the frame does not start with ``SPIC``
``unsupported_version``a format version this reader does not know
``unknown_codec``      a codec id this reader does not know
``crc_mismatch``       the CRC-32 trailer does not match the bytes
``length_mismatch``    bytes after the declared payload, or a payload of wrong size
``limits``             a declared shape, QF or length beyond the format's maxima
``corrupt_payload``    the entropy-coded payload does not decode to the declared shape
``table_mismatch``     the frame's shape or alphabet does not fit the codec tables
``geometry``           latent shape, stride and captured image size disagree with
                       each other or with the model (``Codebook.check_geometry``)
``over_limit``         a well-formed frame larger than the model serves (its
                       manifest's ``limits``, capped by the service's settings)
``stream``             a version-2 frame's type, sequence and reference fields
                       contradict each other (``shared.bitstream`` rule 5)
``needs_reference``    a delta or skip frame read without the frame it refers to
                       (``shared.stream``); the sender answers with a key frame
=====================  ==========================================================
"""

from __future__ import annotations

REASONS = (
    "truncated",
    "bad_magic",
    "unsupported_version",
    "unknown_codec",
    "crc_mismatch",
    "length_mismatch",
    "limits",
    "corrupt_payload",
    "table_mismatch",
    "geometry",
    "over_limit",
    "stream",
    "needs_reference",
)


class BitstreamError(ValueError):
    """A SPIC frame or payload is malformed. ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise AssertionError(f"undocumented reason {reason!r}")
        super().__init__(message)
        self.reason = reason
