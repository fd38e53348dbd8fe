"""A smaller copy of an ImageFolder dataset, in WebP, split into parts that each fit one transfer.

The lent GPU machine (the workplace's ``device`` tool) takes at most 64 MiB of files per call,
the repository included, and Imagenette's JPEGs are 138 MB. The probes in
``models/configs/README.md`` marked "GPU" trained on this copy: every train image and every
``--val-every``-th val image, re-encoded as WebP at ``--quality``, dealt round-robin into
``--parts`` folders, each a ``train/<class>/`` and ``val/<class>/`` tree. Copy the parts into one
folder on the far side and pass it as ``spic-train --data``. The copy is lossy, so figures from it
compare with each other, never with runs on the original JPEGs.

    python scripts/webp_copy.py ../shared/data/imagenette .gpudata --quality 50 --parts 4
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from shared.preprocess import IMAGE_SUFFIXES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", type=Path, help="dataset root with train/<class>/* and val/<class>/*")
    p.add_argument("dst", type=Path, help="where the parts go (dst/p0, dst/p1, ...)")
    p.add_argument("--quality", type=int, default=50, help="WebP quality, 0-100")
    p.add_argument("--parts", type=int, default=4)
    p.add_argument("--val-every", type=int, default=3, help="keep every n-th val image")
    args = p.parse_args(argv)

    def images(split: str) -> list[Path]:
        return sorted(
            f for f in (args.src / split).glob("*/*") if f.suffix.lower() in IMAGE_SUFFIXES
        )

    files = images("train") + images("val")[:: args.val_every]

    def one(item: tuple[int, Path]) -> None:
        i, f = item
        out = args.dst / f"p{i % args.parts}" / f.relative_to(args.src).with_suffix(".webp")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(f).convert("RGB").save(out, "WEBP", quality=args.quality, method=4)

    with ThreadPoolExecutor(2) as pool:  # Pillow releases the GIL while coding
        list(pool.map(one, enumerate(files)))
    print(f"{len(files)} images in {args.parts} parts under {args.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
