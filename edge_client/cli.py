"""spic-edge: the camera side.

    spic-edge encode IMG... --out DIR     write .spic frames; print bytes, bpp and ms per stage
    spic-edge send IMG... --url URL       encode, upload, print each prediction
    spic-edge watch DIR --url URL         camera mode: encode new images, queue them on disk,
                                          upload in capture order, keep going while the cloud is down

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
from edge_client.errors import EdgeError, ImageError
from edge_client.report import prediction_line
from edge_client.settings import EdgeSettings, settings_error

log = logging.getLogger("spic.edge")
S = argparse.SUPPRESS  # a flag not given is absent, so the environment and defaults can speak


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spic-edge", description="SPIC camera-side encoder and uploader"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bundle", type=Path, default=S, help="model bundle folder")
    common.add_argument(
        "--qf", type=int, default=S, help="quantization factor (default: the bundle's)"
    )
    common.add_argument(
        "--bpp",
        type=float,
        default=S,
        help="target bits/px: the bundle's QF measured to fit it (instead of --qf)",
    )
    common.add_argument("--codec", default=S, choices=["rans", "huffman"])
    common.add_argument("--threads", type=int, default=S)
    common.add_argument(
        "--whole-image",
        action="store_true",
        default=S,
        help="encode the whole image (sides must be multiples of the stride)",
    )
    common.add_argument(
        "--int8", action="store_true", default=S, help="use the bundle's INT8 encoder (spic-int8)"
    )
    common.add_argument("--json", action="store_true", help="print one JSON object per image")
    common.add_argument("-v", "--verbose", action="store_true")
    net = argparse.ArgumentParser(add_help=False)
    net.add_argument("--url", default=S, help="cloud base URL, e.g. http://127.0.0.1:8000")
    net.add_argument("--api-key", default=S)
    net.add_argument(
        "--ca-cert",
        type=Path,
        default=S,
        help="CA bundle or certificate to trust for https:// (env SPIC_EDGE_CA_CERT)",
    )
    net.add_argument("--device-id", default=S, help="this camera's id (default: the host name)")
    net.add_argument("--timeout", type=float, default=S, help="seconds per attempt (10)")
    net.add_argument("--retries", type=int, default=S, help="retries per frame (5)")
    sub = p.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", parents=[common], help="write .spic frames")
    enc.add_argument("images", nargs="+", type=Path)
    enc.add_argument("--out", type=Path, required=True)
    snd = sub.add_parser("send", parents=[common, net], help="encode and upload")
    snd.add_argument("images", nargs="+", type=Path)
    w = sub.add_parser("watch", parents=[common, net], help="camera mode on a folder")
    w.add_argument("folder", type=Path)
    w.add_argument("--queue-dir", type=Path, default=S, help="default: FOLDER/.spic-queue")
    w.add_argument(
        "--done-dir", type=Path, default=S, help="encoded images go here; default FOLDER/.spic-done"
    )
    w.add_argument("--interval", type=float, default=S, help="seconds between scans (1)")
    w.add_argument("--max-queue-mb", type=float, default=S, help="queue size bound (256)")
    w.add_argument("--ttl-hours", type=float, default=S, help="undelivered frames expire (24)")
    w.add_argument("--policy", choices=["reject_new", "drop_oldest"], default=S)
    w.add_argument("--settle-s", type=float, default=S, help="wait until a file is unchanged (0.5)")
    w.add_argument(
        "--give-up-s", type=float, default=S, help="unreadable for this long: .spic-failed (30)"
    )
    w.add_argument(
        "--exit-when-idle", action="store_true", help="stop once the folder and the queue are empty"
    )
    w.add_argument(
        "--max-seconds", type=float, default=None, help="stop after this long (tests, demos)"
    )
    return p


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


def cmd_send(args: argparse.Namespace, settings: EdgeSettings) -> int:
    encoder, client = make_encoder(settings), make_client(settings)
    failures = 0
    for path in args.images:
        try:
            data = encoder.encode(path)
        except ImageError as exc:
            print(f"spic-edge: {path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        result = client.classify(data, frame_key(settings.device_id, path.name, data))
        print(prediction_line(str(path), result, args.json), flush=True)
    return 1 if failures else 0


def cmd_watch(args: argparse.Namespace, settings: EdgeSettings) -> int:
    from edge_client.watch import run_watch

    return run_watch(args, settings, make_encoder(settings), make_client(settings))


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
    commands = {"encode": cmd_encode, "send": cmd_send, "watch": cmd_watch}
    try:
        return commands[args.command](args, settings)
    except EdgeError as exc:
        print(f"spic-edge: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a folder that cannot be written, a disk that is full
        print(f"spic-edge: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
