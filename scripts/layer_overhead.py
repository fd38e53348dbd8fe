"""What an enhancement layer costs below its QF: frames of a layered bundle against its base bundle.

    .venv/bin/python scripts/layer_overhead.py models/bundles/spic-imagenette runs/v2-layered \\
        --data ../shared/data/imagenette/val --images 30

For every QF of the base bundle, the mean frame bytes of both on the same images (every n-th val
image), and whether the layered frames' base channels hold the base bundle's symbols exactly (then
the classifier's answers are the base bundle's). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_client.encoder import EdgeEncoder  # noqa: E402
from shared.codebook import Codebook  # noqa: E402
from shared.manifest import load_manifest  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("base", type=Path)
    p.add_argument("layered", type=Path)
    p.add_argument("--data", default="../shared/data/imagenette/val")
    p.add_argument("--images", type=int, default=30)
    args = p.parse_args()
    paths = sorted(Path(args.data).glob("*/*.JPEG"))
    paths = paths[:: max(1, len(paths) // args.images)][: args.images]
    base, layered = load_manifest(args.base), load_manifest(args.layered)
    books = Codebook(base), Codebook(layered)
    rows = {}
    for q in base.qfs:
        encoders = (
            EdgeEncoder(args.base, qf=q, cache_dir=False),
            EdgeEncoder(args.layered, qf=q, cache_dir=False),
        )
        sizes, same = np.zeros((2, len(paths))), True
        for i, path in enumerate(paths):
            frames = [e.encode(path) for e in encoders]
            sizes[:, i] = [len(f) for f in frames]
            a, b = (book.decode(f)[1] for book, f in zip(books, frames, strict=True))
            same &= bool(np.array_equal(a, b[: layered.latent.channels]))
        rows[q] = {
            "base_bytes": round(float(sizes[0].mean()), 2),
            "layered_bytes": round(float(sizes[1].mean()), 2),
            "enhanced": layered.enhancement is not None and layered.enhancement.on(q),
            "base_symbols_identical": same,
        }
    print(
        json.dumps(
            {"base": base.model_id, "layered": layered.model_id, "images": len(paths), "qf": rows}
        )
    )


if __name__ == "__main__":
    main()
