"""``make gpu-pack``: a training copy of the data that travels with the tree to a lent GPU.

The lent GPU machine takes at most 64 MiB per call, the tree included (40 MiB at most), so the
pack must stay within 24 MiB: ``.gpu-pack/data.zip`` holds every train image in WebP at a
``--short-side`` of 96 pixels (q35: about 10 MiB; training crops upsample again), the seeded val
subset that ``spic-train --val-limit`` picks at full size (224², where the evaluation crops; q50),
and the reference bundle the config's ``teacher``/``init_from`` name (it left the tree: read from
``models/bundles`` where ``make old-codecs`` wrote it back, else from git history), deflated.
Images are stored: WebP does not shrink further. The copy is lossy, so its val figures compare
with other runs on such a copy, never with the shipped cards (see scripts/webp_copy.py).

On the GPU machine, from the repository root (the zip unpacks to ``gpu-data/`` and the teacher's
``models/bundles/<name>/``, both git-ignored)::

    python3 -m zipfile -e .gpu-pack/data.zip . && spic-train --data gpu-data --out runs/gpu \\
        --config CONFIG --device cuda
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # run as a file or imported as scripts.gpu_pack

import old_codecs  # noqa: E402
import webp_copy  # noqa: E402

from models.config import TrainConfig  # noqa: E402
from models.data import PROVENANCE_FILE  # noqa: E402

DATA_DIR = "gpu-data"  # where the zip's images unpack, relative to the repository root
MIB = 1 << 20


def teachers(config: Path) -> list[Path]:
    """The reference bundles the config trains from, as the paths it names them by."""
    cfg = TrainConfig.from_json(config) if config.is_file() else TrainConfig()
    return sorted({Path(p) for p in (cfg.teacher, cfg.init_from) if p})


def bundle_files(named: Path, scratch: Path) -> list[tuple[Path, Path]]:
    """(file on disk, path in the zip) for one bundle: the checkout's copy, else git history's."""
    here = named if named.is_absolute() else ROOT / named
    if not (here / "manifest.json").is_file():
        if not old_codecs.in_history():
            raise SystemExit(
                f"{named} is not here and this clone lacks its commit: make old-codecs"
            )
        here = old_codecs.write_bundles(scratch, [named.name])[0]
    return [(f, named / f.name) for f in sorted(here.iterdir()) if f.is_file()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="dataset root: train/<class>/*, val/")
    p.add_argument("--out", type=Path, default=ROOT / ".gpu-pack")
    p.add_argument(
        "--config", type=Path, default=Path("models/configs/spic-split-s16-base-qfs.json")
    )
    p.add_argument("--short-side", type=int, default=96, help="train images' short side, px")
    p.add_argument("--quality", type=int, default=35, help="WebP quality of train images")
    p.add_argument("--val-limit", type=int, default=300, help="spic-train --val-limit's subset")
    p.add_argument("--val-quality", type=int, default=50)
    p.add_argument("--budget-mib", type=float, default=24.0, help="fail above this size")
    args = p.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    pack = args.out / "data.zip"
    with tempfile.TemporaryDirectory(dir=args.out) as scratch:
        copy = Path(scratch) / "copy"
        # One part: the zip below is the single file that travels.
        webp_copy.main(
            [
                *(str(args.data), str(copy), "--parts", "1", "--method", "6"),
                *("--short-side", str(args.short_side), "--quality", str(args.quality)),
                *("--val-limit", str(args.val_limit), "--val-quality", str(args.val_quality)),
            ]
        )
        images = copy / "p0"
        made_by = shlex.join(sys.argv[1:] if argv is None else argv)
        with (images / PROVENANCE_FILE).open("a") as note:
            note.write(f"Packed by: python scripts/gpu_pack.py {made_by}\n")
        with zipfile.ZipFile(pack, "w", zipfile.ZIP_STORED) as z:
            for f in sorted(images.rglob("*")):
                if f.is_file():
                    z.write(f, Path(DATA_DIR) / f.relative_to(images))
            for bundle in teachers(args.config):
                for f, name in bundle_files(bundle, Path(scratch) / "bundles"):
                    z.write(f, name, zipfile.ZIP_DEFLATED)  # float weights: about 7% smaller

    size = pack.stat().st_size
    print(
        f"{pack}: {size} bytes ({size / MIB:.2f} MiB); train images at a {args.short_side}-px "
        f"short side (WebP q{args.quality}), {args.val_limit} val images at full size "
        f"(q{args.val_quality}), teachers: {', '.join(map(str, teachers(args.config))) or 'none'}"
    )
    print("Train on a GPU machine, from the repository root:")
    print(
        f"  python3 -m zipfile -e {shlex.quote(str(pack))} . && spic-train --data {DATA_DIR} "
        f"--out runs/gpu --config {shlex.quote(str(args.config))} --device cuda"
    )
    if size > args.budget_mib * MIB:
        print(f"over the {args.budget_mib} MiB budget: lower --short-side or --quality")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
