"""Rate ladder: does the QF knob of a bundle trade bytes for quality? (issue 11)

    .venv/bin/python bench/rate_ladder.py [--bundle models/bundles/spic-imagenette] [--images DIR]

Every QF the bundle supports encodes the same photos (by default the colour photos scikit-image
ships) through the edge path; the cloud path decodes each frame and reconstructs it. Per QF it
reports the mean frame size, bpp over the encoder's crop, and the mean PSNR and SSIM of the
reconstruction against that crop. A real ladder costs more bytes and reconstructs better at every
step up; ``bytes_rise``, ``psnr_rises`` and ``ssim_rises`` say whether it does (by at least
``MIN_STEP`` per step). No labels are needed, so the same
command judges any bundle (top-1 per QF is ``spic-card``'s job, on a labelled split). The last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cloud_service.runtime import BundleRuntime
from edge_client.encoder import EdgeEncoder
from evaluation.samples import sample_images
from evaluation.spic_eval import psnr, ssim
from shared.bundles import DEFAULT_BUNDLE
from shared.preprocess import prepare, to_uint8_image
from shared.quantize import dequantize

# A step up the ladder counts as better only past these gains: v1's QF 16 -> 48 -> 128 gained
# 0.003 dB, rising in name only.
MIN_STEP = {"mean_bytes": 1.0, "psnr": 0.1, "ssim": 0.002}


def rising(points: list[dict], key: str) -> bool:
    values = [p[key] for p in points]
    return all(b - a >= MIN_STEP[key] for a, b in zip(values, values[1:], strict=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--images", type=Path, help="folder of images (default: scikit-image's photos)")
    args = ap.parse_args()
    images = sample_images(args.images)
    runtime = BundleRuntime(args.bundle, threads=2)
    manifest = runtime.manifest
    spec = manifest.preprocessing.model_dump()
    crops = [to_uint8_image(prepare(im, spec, manifest.latent.stride)) for im in images]
    points = []
    for qf in sorted(manifest.qfs):
        encoder = EdgeEncoder(args.bundle, qf=qf, threads=2, cache_dir=False)
        sizes, scores, sims = [], [], []
        for im, crop in zip(images, crops, strict=True):
            data = encoder.encode(im)
            _, symbols = runtime.codebook.decode(data)
            image = runtime.reconstruct_latents(dequantize(symbols, qf)[None])[0]
            sizes.append(len(data))
            scores.append(psnr(crop, image))
            sims.append(ssim(crop, image))
        pixels = crops[0].shape[0] * crops[0].shape[1]
        point = {
            "qf": qf,
            "mean_bytes": round(float(np.mean(sizes)), 1),
            "bpp": round(8 * float(np.mean(sizes)) / pixels, 4),
            "psnr": round(float(np.mean(scores)), 3),
            "ssim": round(float(np.mean(sims)), 4),
        }
        print(json.dumps(point), flush=True)
        points.append(point)
    print(
        json.dumps(
            {
                "benchmark": "rate_ladder",
                "bundle": args.bundle.name,
                "model_id": manifest.model_id,
                "images": len(images),
                "points": points,
                "min_step": MIN_STEP,
                "bytes_rise": rising(points, "mean_bytes"),
                "psnr_rises": rising(points, "psnr"),
                "ssim_rises": rising(points, "ssim"),
            }
        )
    )


if __name__ == "__main__":
    main()
