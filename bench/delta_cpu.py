"""Edge CPU of one frame's entropy coding: rANS of the whole frame against a delta of each type.

    PYTHONPATH=. .venv/bin/python bench/delta_cpu.py --videos DIR [--clips ...] [--repeat 7]

The clips are read and encoded as ``bench/streams.py`` does (5 frames/s, the bundle's 224² crop,
QF 4). For every frame that differs from the one before, the three coders run in turn
``--repeat`` times (the cdelta with the contexts held from the frame before, making those of the
next frame, as the edge does) and each keeps its least process time (``time.process_time``): on
cores shared with other work the least of several runs is the cost of the code, not of the
neighbours. Prints per clip the mean over frames in µs; the JSON summary is the last line.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from bench.clips import CLIPS, to_array_uint8
from edge_client.video import frames
from shared.bundles import DEFAULT_BUNDLE
from shared.delta_coding import change_between
from shared.preprocess import resize_center_crop
from shared.runtime import SpicCodec
from shared.stream import delta_coder


def least(work: Callable[[], object], repeat: int) -> float:
    """The least process time of ``repeat`` runs of ``work``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        work()
        best = min(best, time.process_time() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=Path, required=True)
    ap.add_argument("--clips", nargs="+", default=list(CLIPS))
    ap.add_argument("--qf", type=int, default=4)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--max-frames", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    codec = SpicCodec(DEFAULT_BUNDLE)
    size = codec.manifest.preprocessing.size
    rans, coder = codec.codebook.codec("rans", args.qf), delta_coder(codec.codebook, args.qf)
    out = {}
    for clip in args.clips:
        symbols = []
        for im in frames(str(args.videos / clip), args.fps):
            crop = to_array_uint8(np.asarray(resize_center_crop(im, size, size)))
            y = codec.analyse(crop, enhancement=False)
            symbols.append(codec.manifest.quantize_latent(y, args.qf))
            if len(symbols) >= args.max_frames:
                break
        times: dict[str, list[float]] = {"rans": [], "delta": [], "cdelta": []}
        for i in range(2, len(symbols)):
            a, b, c = symbols[i - 2], symbols[i - 1], symbols[i]
            if (b == c).all():
                continue  # a skip: nothing coded
            # the contexts of b's change, as the edge holds them from coding b
            held = coder.contexts(change_between(a, b, args.qf), *b.shape[1:])
            times["rans"].append(least(partial(rans.encode, c), args.repeat))
            times["delta"].append(least(partial(coder.encode, b, c), args.repeat))
            times["cdelta"].append(least(partial(coder.encode_next, b, c, held), args.repeat))
        out[clip] = {k: 1e6 * float(np.mean(v)) for k, v in times.items()}
        print(clip, {k: round(v) for k, v in out[clip].items()}, flush=True)
    print(json.dumps({"benchmark": "delta_cpu", "unit": "us per frame", "clips": out}))


if __name__ == "__main__":
    main()
