"""spic-head: train a classifier head on what cameras send.

    spic-head train --codec BUNDLE --data DIR --out HEAD [--qf Q] [--name NAME]
    spic-head train --codec BUNDLE --from-cloud URL --read-key K --out HEAD

``--data`` holds ``train/<class>/`` and ``val/<class>/``; every image is encoded once by the
codec's encoder at ``--qf`` (default: the codec's default QF). ``--from-cloud`` reads frames the
cloud stores and labellers labelled (``models.head_cloud``). The head (``shared.heads``) lands in
``--out``, named after that folder unless ``--name``; ``spic-cloud`` serves it for the codec's
frames. Minutes on 2 CPU cores; ``docs/research/heads.md`` says which ``--kind`` wins when.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from pathlib import Path

from models.head_cloud import cloud_sets, fetch_labelled
from models.head_data import fraction, load_folder_sets
from models.head_export import fit_reject, head_name, write_head_folder
from models.head_train import DEFAULT_KIND, EPOCHS, KINDS, top1_per_qf, train_head
from shared.entrypoints import package_version
from shared.heads import HEAD_NAME, HeadMeasured
from shared.runtime import SpicCodec

CARD_QFS = (2, 4, 8, 16)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="spic-head", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a head on a codec's latents")
    t.add_argument(
        "--codec", type=Path, required=True, help="the SPIC bundle whose frames it reads"
    )
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="folder with train/<class>/ and val/<class>/")
    src.add_argument(
        "--from-cloud", metavar="URL", help="a SPIC cloud whose labelled frames to read"
    )
    t.add_argument("--read-key", help="--from-cloud: an API key with the read scope")
    t.add_argument("--out", type=Path, required=True, help="the head folder to write")
    t.add_argument("--qf", type=int, help="--data: the QF images are encoded at (codec default)")
    t.add_argument("--name", help="the head's name (default: the --out folder's)")
    t.add_argument(
        "--kind", choices=KINDS, default=DEFAULT_KIND, help=f"head kind (default {DEFAULT_KIND})"
    )
    t.add_argument("--epochs", type=int, help=f"default per kind: {EPOCHS}")
    t.add_argument(
        "--mix-qfs",
        type=int,
        nargs="+",
        metavar="Q",
        help="--data: train each frame at one of these QFs (a head serves the QFs it saw); "
        "default without --qf: every QF of the codec's base latent",
    )
    t.add_argument("--no-mirror", action="store_true", help="--data: no mirrored copies")
    t.add_argument(
        "--share",
        type=float,
        default=1.0,
        help="train on this share of each class (data-size runs)",
    )
    t.add_argument(
        "--foreign",
        type=Path,
        help="photos from elsewhere (<class>/ folders): choose the reject rule by them",
    )
    t.add_argument("--threads", type=int, default=2, help="CPU threads (torch and onnxruntime)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.from_cloud and not args.read_key:
        p.error("--from-cloud needs --read-key")
    if args.from_cloud and (args.qf is not None or args.foreign):
        p.error("--qf and --foreign go with --data (frames from the cloud are already encoded)")
    return args


def command_line(argv: list[str]) -> str:
    """The command as the card records it, the read key left out."""
    shown = list(argv)
    for i, a in enumerate(shown[:-1]):
        if a == "--read-key":
            shown[i + 1] = "$SPIC_READ_KEY"
    shown = [("--read-key=$SPIC_READ_KEY" if a.startswith("--read-key=") else a) for a in shown]
    return "spic-head " + shlex.join(shown)


def main(argv: list[str] | None = None) -> int:
    import torch

    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    progress = not args.no_progress
    codec = SpicCodec(args.codec, threads=args.threads)
    name = args.name or head_name(args.out)
    if not re.match(HEAD_NAME, name):
        print(f"spic-head: {name!r} is not a head name ({HEAD_NAME})", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    if args.from_cloud:
        got = fetch_labelled(codec, args.from_cloud, args.read_key, progress)
        train, val = cloud_sets(got)
        qf, dataset = None, f"{args.from_cloud} (labelled frames)"
        for reason, n in got.skipped.items():
            print(f"spic-head: left out {n} frames ({reason})", file=sys.stderr)
    else:
        qf = codec.manifest.default_qf if args.qf is None else args.qf
        if qf not in codec.manifest.qfs:
            print(f"spic-head: QF {qf} is not one of {codec.manifest.qfs}", file=sys.stderr)
            return 2
        train, val = load_folder_sets(codec, args.data, not args.no_mirror, progress, args.threads)
        dataset = str(args.data)
    encode_seconds = time.perf_counter() - t0
    train = fraction(train, args.share, args.seed)
    kind = args.kind
    mix = args.mix_qfs
    if mix is None and args.qf is None and args.data is not None and args.kind != "linear":
        # A head trained at one QF scored 13-18% at the others (docs/research/heads.md); a camera
        # may send any, so by default each frame is drawn at one of the base latent's QFs.
        ceiling = codec.manifest.base_qf_at(max(codec.manifest.qfs))
        mix = [q for q in codec.manifest.qfs if q <= ceiling]
    if mix and not set(mix) <= set(codec.manifest.qfs):
        print(f"spic-head: --mix-qfs {mix}: not all of {codec.manifest.qfs}", file=sys.stderr)
        return 2
    result = train_head(
        codec, train, qf, kind, args.epochs, seed=args.seed, progress=progress, mix=mix
    )
    qfs = sorted(
        {q for q in CARD_QFS if q in codec.manifest.qfs} | ({qf} if qf else set()) | set(mix or [])
    )
    top1 = top1_per_qf(codec, result.model, val, qfs)
    foreign = None
    if args.foreign is not None:
        from models.head_data import encode_folder

        foreign = encode_folder(codec, args.foreign, None, False, progress, args.threads)
    val_latent = val.at(codec, qf)[:, 0]
    command = command_line(argv)
    reject = fit_reject(
        result.model,
        train.at(codec, qf)[:, 0],
        val_latent,
        None if foreign is None else foreign.at(codec, qf)[:, 0],
        str(args.foreign),
        command,
    )
    # What the card adds to HeadMeasured's fields (an extra="allow" model).
    extra = {
        "kind": kind,
        "n_train": len(train),
        "epochs": result.epochs,
        "train_cpu_seconds": round(result.cpu_seconds, 2),
        "mix_qfs": mix,
        "encode_seconds": round(encode_seconds, 2),
    }
    measured = HeadMeasured(
        dataset=dataset,
        n_val=len(val),
        top1=top1,
        train_seconds=round(result.seconds, 2),
        command=command,
        **extra,
    )
    sealed = write_head_folder(args.out, codec, result, train, reject, measured, name, qf)
    summary = {
        "head": str(args.out),
        "name": sealed.name,
        "head_id": sealed.head_id,
        "codec_id": sealed.codec_id,
        "kind": kind,
        "n_train": len(train),
        "n_val": len(val),
        "top1": top1,
        "train_seconds": round(result.seconds, 2),
        "encode_seconds": round(encode_seconds, 2),
        "reject": sealed.reject.score if sealed.reject else None,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
