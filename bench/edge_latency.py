"""Edge latency: the whole camera-side encode of a 224² frame, stage by stage, on one thread.

    .venv/bin/python bench/edge_latency.py [--bundle models/bundles/spic-imagenette] [--frames 300]

Images are held in memory as a camera's RGB buffers (file decoding is not a camera's cost); by
default the colour photos scikit-image ships. For the FP32 encoder and, when the bundle has one,
the INT8 encoder it reports p50 and p99 per stage (preprocess, encoder, quantize, entropy, pack)
and in total. In the same run it times Pillow's JPEG encoder on the same 224² crops at the
quality whose file size comes closest to each SPIC frame (JPEG cannot go as small as SPIC; then
quality 1 is used and the size gap is reported). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from edge_client.encoder import STAGES, EdgeEncoder  # noqa: E402
from evaluation.samples import sample_images  # noqa: E402
from shared.bundles import DEFAULT_BUNDLE  # noqa: E402
from shared.preprocess import resize_center_crop  # noqa: E402
from shared.tuning import tune_malloc  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 4)


def jpeg_bytes(crop: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def matching_quality(crop: Image.Image, target: int) -> int:
    """The JPEG quality whose size is closest to ``target`` bytes (bisection; size grows with q)."""
    lo, hi = 1, 95
    while lo < hi:
        mid = (lo + hi) // 2
        if len(jpeg_bytes(crop, mid)) < target:
            lo = mid + 1
        else:
            hi = mid
    best = min({max(1, lo - 1), lo}, key=lambda q: abs(len(jpeg_bytes(crop, q)) - target))
    return best


def run_mode(
    encoder: EdgeEncoder, images: list[Image.Image], frames: int
) -> tuple[dict, list[int]]:
    for im in images:  # warm-up: graph caches, allocator
        encoder.encode_timed(im)
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    totals: list[float] = []
    sizes: list[int] = []
    for i in range(frames):
        res = encoder.encode_timed(images[i % len(images)])
        for s in STAGES:
            per_stage[s].append(res.timings_ms[s])
        totals.append(sum(res.timings_ms.values()))
        sizes.append(len(res.data))
    summary: dict[str, object] = {
        s: {"p50_ms": pct(v, 50), "p99_ms": pct(v, 99)} for s, v in per_stage.items()
    }
    summary["total"] = {"p50_ms": pct(totals, 50), "p99_ms": pct(totals, 99)}
    coding = [per_stage["entropy"][i] + per_stage["pack"][i] for i in range(frames)]
    summary["entropy_and_pack_share_of_total_p50"] = round(
        float(np.median(coding) / np.median(totals)), 4
    )
    summary["mean_frame_bytes"] = round(float(np.mean(sizes)), 1)
    return summary, sizes[: len(images)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--images", type=Path, help="folder of images (default: scikit-image's photos)")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--qf", type=int)
    ap.add_argument("--codec", default="rans", choices=["rans", "huffman"])
    args = ap.parse_args()
    tune_malloc()
    images = sample_images(args.images)
    result: dict = {
        "benchmark": "edge_latency",
        "bundle": args.bundle.name,
        "threads": 1,
        "frames": args.frames,
        "codec": args.codec,
        "images": len(images),
    }
    fp32 = EdgeEncoder(args.bundle, qf=args.qf, codec=args.codec, threads=1)
    result["qf"] = fp32.qf
    result["fp32"], sizes = run_mode(fp32, images, args.frames)
    if "encoder_int8" in fp32.manifest.files:
        result["int8"], _ = run_mode(
            EdgeEncoder(args.bundle, qf=args.qf, codec=args.codec, threads=1, int8=True),
            images,
            args.frames,
        )
        result["int8_speedup_encoder_p50"] = round(
            result["fp32"]["encoder"]["p50_ms"] / result["int8"]["encoder"]["p50_ms"], 3
        )
        result["int8_speedup_total_p50"] = round(
            result["fp32"]["total"]["p50_ms"] / result["int8"]["total"]["p50_ms"], 3
        )

    # JPEG on the same crops, at the quality that matches each SPIC frame's size.
    size = fp32.manifest.preprocessing.size
    crops = [resize_center_crop(im, size, size) for im in images]
    qualities = [matching_quality(c, s) for c, s in zip(crops, sizes, strict=True)]
    times, jpeg_sizes = [], []
    for i in range(args.frames):
        c, q = crops[i % len(crops)], qualities[i % len(crops)]
        t0 = time.perf_counter()
        data = jpeg_bytes(c, q)
        times.append((time.perf_counter() - t0) * 1e3)
        jpeg_sizes.append(len(data))
    result["jpeg_matched"] = {
        "qualities": qualities,
        "p50_ms": pct(times, 50),
        "p99_ms": pct(times, 99),
        "mean_bytes": round(float(np.mean(jpeg_sizes)), 1),
        "spic_mean_bytes": round(float(np.mean(sizes)), 1),
    }
    result["spic_fp32_over_jpeg_p50"] = round(
        result["fp32"]["total"]["p50_ms"] / result["jpeg_matched"]["p50_ms"], 2
    )
    for mode in ("fp32", "int8"):
        if mode in result:
            r = result[mode]
            print(
                f"{mode}: total p50 {r['total']['p50_ms']:.2f} ms, p99 {r['total']['p99_ms']:.2f} ms; "
                + ", ".join(f"{s} {r[s]['p50_ms']:.2f}" for s in STAGES)
                + f"; entropy+pack {100 * r['entropy_and_pack_share_of_total_p50']:.1f}% of total"
            )
    j = result["jpeg_matched"]
    print(
        f"JPEG at matched size: p50 {j['p50_ms']:.2f} ms, {j['mean_bytes']:.0f} B vs SPIC {j['spic_mean_bytes']:.0f} B (qualities {qualities})"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
