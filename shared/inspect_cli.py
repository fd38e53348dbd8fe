"""spic-inspect FILE...: print each SPIC frame's header as one JSON object per line.

Exit status 0 when every file is a valid frame, 2 when any is not (each bad file gets a one-line
``spic-inspect: FILE: reason: message`` on stderr; the good ones are still printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shared import bitstream
from shared.codecs import CODEC_IDS
from shared.entrypoints import package_version
from shared.errors import BitstreamError

EXAMPLES = """\
examples:
  spic-inspect frames/photo.spic                 one JSON line: every header field, bytes, bpp
  spic-inspect frames/*.spic | jq .bpp           the rate of each frame
  spic-edge encode photo.jpg --out f/ && spic-inspect f/photo.spic

No settings and no SPIC_* variables: it reads only the files named. Exit status 0 when every
file is a valid frame, 2 when any is not (one line on stderr per bad file)."""


def describe(frame: bitstream.Frame, path: str) -> dict[str, Any]:
    stream = {}
    if frame.version == bitstream.STREAM_VERSION:
        stream = {"frame_type": frame.frame_type, "stream_id": frame.stream_id, "seq": frame.seq}
        stream["ref_seq"] = frame.ref_seq
    sizes = {
        "header_bytes": frame.overhead,
        "payload_bytes": len(frame.payload),
        "total_bytes": frame.nbytes,
    }
    if frame.frame_type != "key":  # its codec, QF, model and shape are its reference's
        return {"file": path, "version": frame.version, **stream, **sizes}
    c, h, w = frame.latent_shape
    in_w, in_h = frame.input_size
    return {
        "file": path,
        "version": frame.version,
        "codec": CODEC_IDS[frame.codec],
        "codec_id": frame.codec,
        "qf": frame.qf,
        "model_id": frame.model_id_hex,
        "latent_shape": [c, h, w],
        "stride": frame.stride,
        "input_size": [in_w, in_h],
        "image_size": list(frame.image_size),
        **sizes,
        "bpp": round(frame.bpp, 6),
        "bits_per_symbol": round(8 * len(frame.payload) / (c * h * w), 6),
        **stream,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="spic-inspect",
        description=__doc__.split("\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help=".spic frames (spic-edge encode writes them)"
    )
    args = parser.parse_args(argv)
    status = 0
    for path in args.files:
        try:
            with open(path, "rb") as f:
                frame = bitstream.unpack(f.read())
        except BitstreamError as exc:
            print(f"spic-inspect: {path}: {exc.reason}: {exc}", file=sys.stderr)
            status = 2
            continue
        except OSError as exc:
            print(f"spic-inspect: {path}: unreadable: {exc.strerror or exc}", file=sys.stderr)
            status = 2
            continue
        print(json.dumps(describe(frame, path)))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
