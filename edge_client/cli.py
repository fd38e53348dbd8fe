"""spic-edge: the camera side.

    spic-edge encode IMG... --out DIR     write .spic frames; print bytes, bpp and ms per stage
    spic-edge send IMG... --url URL       encode, upload, print each prediction
    spic-edge watch DIR --url URL         camera mode: encode new images, queue them on disk,
                                          upload in capture order, keep going while the cloud is down

Every option can also come from the environment as SPIC_EDGE_<OPTION> (for example
SPIC_EDGE_URL, SPIC_EDGE_API_KEY, SPIC_EDGE_QUEUE_DIR); a flag wins over the environment.
Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from edge_client.errors import AuthError, EdgeError, QueueFullError

DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "bundles" / "spic-imagenette"
log = logging.getLogger("spic.edge")


def env(name: str, default=None):
    return os.environ.get(f"SPIC_EDGE_{name.upper()}", default)


def frame_key(path: Path, data: bytes) -> str:
    """Deterministic per image: re-encoding the same file after a crash gives the same key."""
    return hashlib.sha256(path.name.encode() + b"\0" + data).hexdigest()[:32]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spic-edge", description="SPIC camera-side encoder and uploader"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--bundle", default=env("bundle", str(DEFAULT_BUNDLE)), help="model bundle folder"
    )
    common.add_argument(
        "--qf", type=int, default=env("qf"), help="quantization factor (default: the bundle's)"
    )
    common.add_argument("--codec", default=env("codec", "rans"), choices=["rans", "huffman"])
    common.add_argument("--threads", type=int, default=int(env("threads", 1)))
    common.add_argument(
        "--whole-image",
        action="store_true",
        default=env("whole_image") == "1",
        help="encode the whole image (sides must be multiples of the stride)",
    )
    common.add_argument(
        "--int8",
        action="store_true",
        default=env("int8") == "1",
        help="use the bundle's INT8 encoder (see spic-int8)",
    )
    common.add_argument("--json", action="store_true", help="print one JSON object per image")
    common.add_argument("-v", "--verbose", action="store_true")
    net = argparse.ArgumentParser(add_help=False)
    net.add_argument("--url", default=env("url"), help="cloud base URL, e.g. http://127.0.0.1:8000")
    net.add_argument("--api-key", default=env("api_key"))
    net.add_argument("--timeout", type=float, default=float(env("timeout", 10)))
    net.add_argument("--retries", type=int, default=int(env("retries", 5)))
    sub = p.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", parents=[common], help="write .spic frames")
    enc.add_argument("images", nargs="+", type=Path)
    enc.add_argument("--out", type=Path, required=True)
    snd = sub.add_parser("send", parents=[common, net], help="encode and upload")
    snd.add_argument("images", nargs="+", type=Path)
    w = sub.add_parser("watch", parents=[common, net], help="camera mode on a folder")
    w.add_argument("folder", type=Path)
    w.add_argument(
        "--queue-dir", type=Path, default=env("queue_dir"), help="default: FOLDER/.spic-queue"
    )
    w.add_argument(
        "--done-dir",
        type=Path,
        default=env("done_dir"),
        help="encoded images go here; default FOLDER/.spic-done",
    )
    w.add_argument(
        "--interval", type=float, default=float(env("interval", 1.0)), help="seconds between scans"
    )
    w.add_argument("--max-queue-mb", type=float, default=float(env("max_queue_mb", 256)))
    w.add_argument("--ttl-hours", type=float, default=float(env("ttl_hours", 24)))
    w.add_argument(
        "--policy", choices=["reject_new", "drop_oldest"], default=env("policy", "reject_new")
    )
    w.add_argument(
        "--exit-when-idle", action="store_true", help="stop once the folder and the queue are empty"
    )
    w.add_argument(
        "--max-seconds", type=float, default=None, help="stop after this long (tests, demos)"
    )
    return p


def _encoder(args):
    from edge_client.encoder import EdgeEncoder

    return EdgeEncoder(
        args.bundle,
        qf=None if args.qf is None else int(args.qf),
        codec=args.codec,
        threads=args.threads,
        whole_image=args.whole_image,
    )


def _client(args):
    from edge_client.client import CloudClient

    if not args.url:
        raise EdgeError("no cloud URL: pass --url or set SPIC_EDGE_URL")
    return CloudClient(
        args.url, api_key=args.api_key, timeout=args.timeout, max_retries=args.retries
    )


def _prediction_line(source: str, result: dict, as_json: bool) -> str:
    if as_json:
        return json.dumps({"image": source, **result})
    return (
        f"{source}: {result['label']} ({100 * result['confidence']:.1f}%)  {result['bytes']} B  "
        f"{result['bpp']:.4f} bpp  QF {result['qf']}  request {result['request_id']}"
    )


def cmd_encode(args) -> int:
    encoder = _encoder(args)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        res = encoder.encode_timed(path)
        (args.out / f"{path.stem}.spic").write_bytes(res.data)
        if args.json:
            print(
                json.dumps(
                    {
                        "image": str(path),
                        "bytes": len(res.data),
                        "bpp": res.bpp,
                        "timings_ms": res.timings_ms,
                    }
                )
            )
        else:
            stages = " ".join(f"{k} {v:.2f}" for k, v in res.timings_ms.items())
            print(
                f"{path}: {len(res.data)} B  {res.bpp:.4f} bpp  ms: {stages}  total {sum(res.timings_ms.values()):.2f}"
            )
    return 0


def cmd_send(args) -> int:
    encoder, client = _encoder(args), _client(args)
    for path in args.images:
        data = encoder.encode(path)
        result = client.classify(data, frame_key(path, path.read_bytes()))
        print(_prediction_line(str(path), result, args.json), flush=True)
    return 0


def cmd_watch(args) -> int:
    from edge_client.frame_queue import FrameQueue
    from edge_client.preprocess import IMAGE_SUFFIXES
    from edge_client.uploader import Uploader

    folder = args.folder
    if not folder.is_dir():
        raise EdgeError(f"watch folder {folder} does not exist")
    queue = FrameQueue(
        args.queue_dir or folder / ".spic-queue",
        max_bytes=int(args.max_queue_mb * (1 << 20)),
        ttl_s=args.ttl_hours * 3600,
        policy=args.policy,
    )
    done = args.done_dir or folder / ".spic-done"
    done.mkdir(parents=True, exist_ok=True)
    encoder, client = _encoder(args), _client(args)
    uploader = Uploader(
        queue,
        client,
        on_result=lambda item, r: print(_prediction_line(item.source, r, args.json), flush=True),
    )
    start = time.monotonic()
    was_down = False
    while True:
        images = sorted(
            (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda p: (p.stat().st_mtime_ns, p.name),
        )
        queued = queue.keys()
        for path in images:
            data = path.read_bytes()
            key = frame_key(path, data)
            if key not in queued:
                try:
                    queue.put(encoder.encode(path), key=key, source=path.name)
                except QueueFullError:
                    break  # logged by the queue; the image stays in the folder for a later scan
                except EdgeError as exc:
                    failed = folder / ".spic-failed"
                    failed.mkdir(exist_ok=True)
                    os.replace(path, failed / path.name)
                    print(
                        f"spic-edge: {path.name}: {exc}; moved to {failed}",
                        file=sys.stderr,
                        flush=True,
                    )
                    continue
            os.replace(path, done / path.name)
        report = uploader.drain()
        if report.cloud_down != was_down:
            state = "DOWN, queueing" if report.cloud_down else "back, catching up"
            print(
                f"spic-edge: cloud {state}; {len(queue)} frame(s) in queue",
                file=sys.stderr,
                flush=True,
            )
            was_down = report.cloud_down
        if args.verbose or report.cloud_down:
            print(
                f"spic-edge: queue depth {len(queue)} ({queue.total_bytes()} B)",
                file=sys.stderr,
                flush=True,
            )
        idle = not images and len(queue) == 0
        if (args.exit_when_idle and idle) or (
            args.max_seconds and time.monotonic() - start > args.max_seconds
        ):
            return 0
        if not images or report.cloud_down:
            time.sleep(args.interval)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from shared.tuning import tune_malloc

    tune_malloc()
    try:
        return {"encode": cmd_encode, "send": cmd_send, "watch": cmd_watch}[args.command](args)
    except AuthError as exc:
        print(f"spic-edge: error: {exc}", file=sys.stderr)
        return 1
    except EdgeError as exc:
        print(f"spic-edge: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
