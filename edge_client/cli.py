"""spic-edge: the camera side (flags and examples: ``edge_client.parser``, ``spic-edge --help``).

    spic-edge encode IMG... --out DIR     write .spic frames; print bytes, bpp and ms per stage
    spic-edge send FILE... --url URL      encode images (.spic frames go as they are), upload,
                                          print each prediction
    spic-edge watch DIR --url URL         camera mode: encode new images, queue them on disk,
                                          upload in capture order, keep going while the cloud is down
    spic-edge stream SOURCE --url URL     fixed-camera mode: a video file, URL or device sampled
                                          at --fps, sent as key, delta and skip frames (queued)

Every option can also come from the environment as SPIC_EDGE_<OPTION> (for example
SPIC_EDGE_URL, SPIC_EDGE_API_KEY, SPIC_EDGE_QUEUE_DIR); a flag wins over the environment. Both are
validated once, before anything starts (``edge_client.settings``). Errors are one line on stderr
and exit status 1 (2 for bad settings).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge_client.client import frame_key
from edge_client.errors import AuthError, CloudRejectedError, EdgeError, ImageError
from edge_client.limits import learn_limits
from edge_client.parser import build_parser
from edge_client.report import prediction_line
from edge_client.settings import EdgeSettings, settings_error
from shared import bitstream
from shared.errors import BitstreamError

log = logging.getLogger("spic.edge")
__all__ = ["build_parser", "main"]


def load_settings(args: argparse.Namespace) -> EdgeSettings:
    given = {k: v for k, v in vars(args).items() if k in EdgeSettings.model_fields}
    return EdgeSettings(**given)


def make_encoder(settings: EdgeSettings) -> Any:
    from edge_client.encoder import EdgeEncoder

    encoder = EdgeEncoder(
        settings.bundle,
        qf=settings.qf,
        codec=settings.codec,
        threads=settings.threads,
        whole_image=settings.whole_image,
        int8=settings.int8,
        target_bpp=settings.bpp,
    )
    encoder.limits = encoder.bundle_limits  # the cloud's, once it has been asked (learn_limits)
    target = "" if settings.bpp is None else f" (measured to fit {settings.bpp} bpp)"
    print(
        f"spic-edge: {encoder.precision.upper()} encoder, model {encoder.model_id}, "
        f"QF {encoder.qf}{target}, {encoder.codec_name}",
        file=sys.stderr,
        flush=True,
    )
    return encoder


def make_client(settings: EdgeSettings) -> Any:
    from edge_client.client import CloudClient

    if not settings.url:
        raise EdgeError("no cloud URL: pass --url or set SPIC_EDGE_URL")
    return CloudClient(
        settings.url,
        api_key=settings.api_key,
        timeout=settings.timeout,
        max_retries=settings.retries,
        device_id=settings.device_id,
        ca_cert=str(settings.ca_cert) if settings.ca_cert else None,
    )


def cmd_encode(args: argparse.Namespace, settings: EdgeSettings) -> int:
    encoder = make_encoder(settings)
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in args.images:
        try:
            res = encoder.encode_timed(path)
        except ImageError as exc:  # one bad file: say so, go on with the rest
            print(f"spic-edge: {path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        (args.out / f"{path.stem}.spic").write_bytes(res.data)
        total = sum(res.timings_ms.values())
        if args.json:
            record = {"image": str(path), "bytes": len(res.data), "bpp": res.bpp, "qf": res.qf}
            record |= {"encoder": encoder.precision, "timings_ms": res.timings_ms}
            print(json.dumps(record))
        else:
            stages = " ".join(f"{k} {v:.2f}" for k, v in res.timings_ms.items())
            print(
                f"{path}: {len(res.data)} B  {res.bpp:.4f} bpp  QF {res.qf}  "
                f"ms: {stages}  total {total:.2f}"
            )
    return 1 if failures else 0


def frame_of(path: Path, encoder: Any) -> bytes:
    """What ``send`` uploads for a file: a .spic frame as it is (checked, not re-encoded), an
    image encoded. Raises ``ImageError``."""
    if path.suffix.lower() != ".spic":
        data: bytes = encoder.encode(path)
        return data
    try:
        data = path.read_bytes()
        bitstream.unpack(data)
    except OSError as exc:
        raise ImageError(f"cannot read frame: {exc.strerror or exc}") from exc
    except BitstreamError as exc:
        raise ImageError(f"not a SPIC frame: {exc.reason}: {exc}") from exc
    return data


def cmd_send(args: argparse.Namespace, settings: EdgeSettings) -> int:
    client = make_client(settings)
    # Frames made earlier need no encoder: only images load the model.
    images = [p for p in args.images if p.suffix.lower() != ".spic"]
    encoder = make_encoder(settings) if images else None
    if encoder is not None:
        learn_limits(encoder, client)
    failures = 0
    for path in args.images:
        try:
            taken = path.stat().st_mtime  # when the camera wrote it: sent as X-Captured-At
            data = frame_of(path, encoder)
            key = frame_key(settings.device_id, path.name, data)
            result = client.classify(data, key, captured_at=taken)
        except AuthError:
            raise  # the key is wrong for every file
        except (ImageError, CloudRejectedError) as exc:  # this file only: say so, go on
            print(f"spic-edge: {path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        except OSError as exc:
            print(f"spic-edge: {path}: {exc.strerror or exc}", file=sys.stderr)
            failures += 1
            continue
        print(prediction_line(str(path), result, args.json), flush=True)
    return 1 if failures else 0


def cmd_watch(args: argparse.Namespace, settings: EdgeSettings) -> int:
    from edge_client.watch import run_watch

    if args.stream and (why := stream_args_error(args)):
        print(f"spic-edge: bad settings: {why}", file=sys.stderr)
        return 2
    return run_watch(args, settings, make_encoder(settings), make_client(settings))


def stream_args_error(args: argparse.Namespace) -> str | None:
    if not 0 <= args.stream_id <= 0xFFFF:
        return "--stream-id must be 0..65535"
    if args.key_interval < 1 or args.position_changes < 1:
        return "--key-interval and --position-changes must be at least 1"
    return None


def cmd_stream(args: argparse.Namespace, settings: EdgeSettings) -> int:
    from edge_client.stream import run_stream
    from edge_client.video import VideoError

    if why := stream_args_error(args):
        print(f"spic-edge: bad settings: {why}", file=sys.stderr)
        return 2
    try:
        return run_stream(args, settings, make_encoder(settings), make_client(settings))
    except VideoError as exc:
        raise EdgeError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings(args)
    except ValidationError as exc:
        print(f"spic-edge: bad settings: {settings_error(exc)}", file=sys.stderr)
        return 2
    from shared.tuning import tune_malloc

    tune_malloc()
    commands = {"encode": cmd_encode, "send": cmd_send, "watch": cmd_watch, "stream": cmd_stream}
    try:
        return commands[args.command](args, settings)
    except EdgeError as exc:
        print(f"spic-edge: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a folder that cannot be written, a disk that is full
        where = f": {exc.filename}" if exc.filename else ""
        print(f"spic-edge: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
