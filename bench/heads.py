"""Which ``spic-head`` kind wins at which data size, against the pixel baseline.

    nice python bench/heads.py --codec models/bundles/spic-imagenette \\
        --reference DIR/reference-imagenette-ema \\
        --data clothing=/path/clothing_small --data signs=/path/sign_digits

For each labelled set (``train/<class>/``, ``val/<class>/``): every image is encoded once by the
codec (and once mirrored); for each share of the training split (``--shares``, per class) each
head kind (``models.head_train``) is trained on the latents at the codec's default QF and scored
on the whole val split; the pixel reference (``models.pixel_finetune``) is fine-tuned on the same
share of the same images, clean crops. Each row has its ``spic-head`` command (``--share`` picks
the same images). The JSON summary is printed last and written to ``--out``
(docs/results/bench/heads.json; docs/research/heads.md reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from models.head_data import fraction, load_folder_sets, share_index
from models.head_train import EPOCHS, KINDS, top1_per_qf, train_head
from models.pixel_finetune import PixelSet, finetune_reference, load_crops
from shared.runtime import SpicCodec

OUT = Path("docs/results/bench/heads.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codec", type=Path, default=Path("models/bundles/spic-imagenette"))
    p.add_argument("--reference", type=Path, help="the pixel reference bundle")
    p.add_argument("--data", action="append", default=[], help="NAME=DIR, repeatable")
    p.add_argument("--table", action="store_true", help="print --out's rows as a Markdown table")
    p.add_argument("--methods", nargs="+", help="--table: only these methods (exact names)")
    p.add_argument("--shares", type=float, nargs="+", default=[0.25, 1.0])
    p.add_argument("--kinds", nargs="*", choices=KINDS, default=list(KINDS))
    p.add_argument("--epochs", type=int, help="the heads' epochs (default: each kind's own)")
    p.add_argument("--no-pixel", action="store_true", help="skip the pixel baseline")
    p.add_argument("--threads", type=int, default=1, help="1: CPU seconds comparable across runs")
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args(argv)


def head_command(codec: Path, data: str, kind: str, share: float, qf: int) -> str:
    cmd = f"spic-head train --codec {codec} --data {data} --out heads/NAME --qf {qf} --kind {kind}"
    return cmd + (f" --share {share:g}" if share < 1 else "")


def run_heads(args: argparse.Namespace, codec: SpicCodec, name: str, data: Path) -> list[dict]:
    qf = codec.manifest.default_qf
    t0, c0 = time.perf_counter(), time.process_time()
    train_all, val = load_folder_sets(codec, data, True, False, args.threads)
    encode_s, encode_cpu = time.perf_counter() - t0, time.process_time() - c0
    rows: list[dict] = []
    for share in args.shares:
        train = fraction(train_all, share)
        for kind in args.kinds:
            result = train_head(codec, train, qf, kind, args.epochs, progress=False)
            top1 = top1_per_qf(codec, result.model, val, [qf])[str(qf)]
            rows.append(
                {
                    "dataset": name,
                    "share": share,
                    "n_train": len(train),
                    "n_val": len(val),
                    "method": f"spic-head {kind}"
                    + (f", {args.epochs} epochs" if args.epochs else ""),
                    "qf": qf,
                    "epochs": result.epochs,
                    "top1": round(top1, 4),
                    "train_seconds": round(result.seconds, 1),
                    "train_cpu_seconds": round(result.cpu_seconds, 1),
                    "encode_seconds_whole_set": round(encode_s, 1),
                    "encode_cpu_seconds_whole_set": round(encode_cpu, 1),
                    "command": head_command(args.codec, str(data), kind, share, qf)
                    + (f" --epochs {args.epochs}" if args.epochs else ""),
                }
            )
            save(args, codec, rows[-1])
    return rows


def run_pixel(args: argparse.Namespace, codec: SpicCodec, name: str, data: Path) -> list[dict]:
    spec = codec.manifest.preprocessing.model_dump()
    stride = codec.manifest.latent.stride
    pix_train = load_crops(data / "train", spec, stride)
    pix_val = load_crops(data / "val", spec, stride, pix_train.classes)
    rows: list[dict] = []
    for share in args.shares:
        keep = share_index(pix_train.labels, share)  # the images spic-head's --share picks
        sub = PixelSet(pix_train.crops[keep], pix_train.labels[keep], pix_train.classes)
        r = finetune_reference(args.reference, sub, pix_val, EPOCHS["finetune"])
        rows.append(
            {
                "dataset": name,
                "share": share,
                "n_train": len(keep),
                "n_val": len(pix_val.labels),
                "method": "pixel reference fine-tune",
                "qf": None,
                "epochs": r.epochs,
                "top1": round(r.top1, 4),
                "train_seconds": round(r.seconds, 1),
                "train_cpu_seconds": round(r.cpu_seconds, 1),
                "command": f"python bench/heads.py --reference {args.reference} "
                f"--data {name}={data} --shares {share:g} --kinds",
            }
        )
        save(args, codec, rows[-1])
    return rows


def save(args: argparse.Namespace, codec: SpicCodec, row: dict) -> dict:
    """Add ``row`` to ``--out`` as soon as it is measured (a long run stopped early keeps what
    it measured); a row of the same set, method and share measured before is replaced."""
    row["bench_command"] = "python bench/heads.py " + " ".join(args.argv)
    print(json.dumps(row), flush=True)
    before = json.loads(args.out.read_text()) if args.out.is_file() else {}
    key = (row["dataset"], row["method"], row["share"])
    rows = [r for r in before.get("rows", []) if (r["dataset"], r["method"], r["share"]) != key]
    rows.append(row)
    summary = {
        "bench": "heads",
        "codec": str(args.codec),
        "codec_id": codec.model_id,
        # a run without the baseline (--no-pixel) keeps the pixel rows, so it keeps their reference
        "reference": str(args.reference) if args.reference else before.get("reference"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} thread(s) per run",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def short_command(row: dict) -> str:
    """A row's command without the parts every row shares (codec, output folder, data root)."""
    if row["method"].startswith("pixel"):
        return f"bench/heads.py --data {row['dataset']}=DIR --kinds --shares {row['share']:g}"
    flags = row["command"].split(" --out heads/NAME")[1]
    if " --qf " not in flags:  # rows measured before spic-head mixed QFs by default
        flags = f" --qf {row.get('qf', 4)}{flags}"
    return (
        f"spic-head train --data {Path(row['command'].split(' --data ')[1].split()[0]).name}{flags}"
    )


def table(summary: dict, methods: list[str] | None = None) -> str:
    """The rows as docs/research/heads.md shows them: per set and share, each method's val top-1
    and training CPU seconds, and that time over the pixel baseline's."""
    rows = sorted(summary["rows"], key=lambda r: (r["dataset"], r["share"], r["method"]))
    pixel = {(r["dataset"], r["share"]): r for r in rows if r["method"].startswith("pixel")}
    out = [
        "| set | share (train images) | method | val top-1 | Δ vs pixel | train CPU s | "
        "× pixel's time | wall s | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if methods and r["method"] not in methods:
            continue
        base = pixel.get((r["dataset"], r["share"]))
        delta = f"{100 * (r['top1'] - base['top1']):+.1f}" if base else "n/a"
        ratio = f"{r['train_cpu_seconds'] / base['train_cpu_seconds']:.3f}" if base else "n/a"
        out.append(
            f"| {r['dataset']} | {r['share']:g} ({r['n_train']}) | {r['method']} | "
            f"{100 * r['top1']:.1f}% | {delta} | {r['train_cpu_seconds']:.0f} | {ratio} | "
            f"{r['train_seconds']:.0f} | `{short_command(r)}` |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        print(table(json.loads(args.out.read_text()), args.methods))
        return 0
    if args.reference is None and not args.no_pixel:
        raise SystemExit("--reference is needed for the pixel baseline (or --no-pixel)")
    args.argv = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(args.threads)
    codec = SpicCodec(args.codec, threads=args.threads)
    rows: list[dict] = []
    for item in args.data:
        name, _, folder = item.partition("=")
        if args.kinds:
            rows += run_heads(args, codec, name, Path(folder))
        if not args.no_pixel:
            rows += run_pixel(args, codec, name, Path(folder))
    summary = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": rows}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
