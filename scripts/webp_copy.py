"""A smaller copy of an ImageFolder dataset, in WebP, that fits the lent GPU's transfer.

The lent GPU machine (the workplace's ``device`` tool) takes at most 64 MiB of files per call,
the repository included, and Imagenette's JPEGs are 138 MB. Runs marked "GPU" in
``docs/research/training-log.md`` trained on such a copy, and their cards name it in their
``--data``. The copy is lossy, so its validation figures compare with each other, never with
runs on the original JPEGs: the shipped cards are measured on the original val JPEGs. Each copy
holds a ``PROVENANCE.txt`` at its root saying what it is and the command that made it;
``spic-train`` keeps that text in its checkpoint and ``spic-export`` prints it in the card.

Two layouts:

- ``--parts N`` (the default, 4): every train image and every ``--val-every``-th val image, dealt
  round-robin into N folders ``dst/p0 ...``, each small enough for one call; copy them into one
  folder on the far side.
- ``--zip``: one ``dst/data.zip`` (stored, not deflated: WebP does not shrink further) holding
  ``data/train/...`` and ``data/val/...``; a folder of ten thousand small files counts far more
  than its bytes against the transfer limit, one file does not. Unzip it with
  ``python3 -m zipfile -e data.zip DIR`` and pass ``DIR/data``.

``--short-side`` shrinks train images (validation keeps its size: it measures at 224² crops),
and ``--val-limit`` keeps the seeded val subset that ``spic-train --val-limit`` would pick. The
copy behind the GPU runs of issue 11 (runs 15-22):

    python scripts/webp_copy.py ../shared/data/imagenette .gpu --zip --short-side 192 \\
        --quality 60 --method 6 --val-limit 500 --val-quality 75
"""

from __future__ import annotations

import argparse
import shlex
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from models.data import PROVENANCE_FILE, scan_image_folder, seeded_subset
from shared.preprocess import load_rgb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", type=Path, help="dataset root with train/<class>/* and val/<class>/*")
    p.add_argument("dst", type=Path, help="where the copy goes (dst/p0, ... or dst/data.zip)")
    p.add_argument("--quality", type=int, default=50, help="WebP quality of train images, 0-100")
    p.add_argument("--val-quality", type=int, help="WebP quality of val images (default --quality)")
    p.add_argument("--method", type=int, default=4, help="WebP effort, 0-6: 6 is smallest")
    p.add_argument("--short-side", type=int, help="resize train images to this short side")
    p.add_argument("--parts", type=int, default=4)
    p.add_argument("--val-every", type=int, default=3, help="keep every n-th val image")
    p.add_argument("--val-limit", type=int, help="keep spic-train --val-limit's seeded subset")
    p.add_argument("--zip", action="store_true", help="one stored zip instead of parts")
    args = p.parse_args(argv)

    train = scan_image_folder(args.src / "train")[0]
    val = scan_image_folder(args.src / "val")[0]
    if args.val_limit is not None:
        val = [val[i] for i in seeded_subset(len(val), args.val_limit)]
    else:
        val = val[:: args.val_every]
    val_quality = args.quality if args.val_quality is None else args.val_quality
    jobs = [(f, args.short_side, args.quality) for f in train] + [
        (f, None, val_quality) for f in val
    ]
    staging = args.dst / "data" if args.zip else args.dst

    def one(item: tuple[int, tuple[Path, int | None, int]]) -> Path:
        i, (f, side, quality) = item
        part = staging if args.zip else args.dst / f"p{i % args.parts}"
        out = part / f.relative_to(args.src).with_suffix(".webp")
        out.parent.mkdir(parents=True, exist_ok=True)
        im = load_rgb(f)
        if side is not None and min(im.size) != side:
            # Lanczos: the sharpest of Pillow's downscaling filters; training crops upsample again
            scale = side / min(im.size)
            im = im.resize(
                (round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS
            )
        im.save(out, "WEBP", quality=quality, method=args.method)
        return out

    with ThreadPoolExecutor(2) as pool:  # Pillow releases the GIL while coding
        written = list(pool.map(one, enumerate(jobs)))
    # Each copy says what it is: spic-train records this file, and the model card prints it.
    side = f"at a {args.short_side}-pixel short side, " if args.short_side else ""
    picked = (
        f"--val-limit {args.val_limit}'s subset" if args.val_limit else f"every {args.val_every}th"
    )
    argv_text = shlex.join(sys.argv[1:] if argv is None else argv)
    note = (
        f"A lossy copy of {args.src}: the train images {side}in WebP q{args.quality}; "
        f"{len(val)} val images ({picked}) in WebP q{val_quality}. Made by: "
        f"python scripts/webp_copy.py {argv_text}\n"
    )
    roots = [staging] if args.zip else [args.dst / f"p{i}" for i in range(args.parts)]
    for root in roots:
        root.mkdir(parents=True, exist_ok=True)
        (root / PROVENANCE_FILE).write_text(note)
    if args.zip:
        with zipfile.ZipFile(args.dst / "data.zip", "w", zipfile.ZIP_STORED) as z:
            for out in [*written, staging / PROVENANCE_FILE]:
                z.write(out, out.relative_to(args.dst))
        print(f"{len(written)} images in {args.dst / 'data.zip'}")
    else:
        print(f"{len(written)} images in {args.parts} parts under {args.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
