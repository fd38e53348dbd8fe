"""A bundle's rate ladder on unlabelled photos: per QF, the frame size and the reconstruction.

Every QF the bundle supports encodes the same photos through the edge path; the cloud path decodes
each frame and reconstructs it. A real ladder costs more bytes and reconstructs better at every
step up (issue 11); ``rising`` says whether it does, by at least ``MIN_STEP`` per step. Used by
``bench/rate_ladder.py`` and by the test that holds the shipped bundle to it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from edge_client.encoder import EdgeEncoder
from evaluation.spic_eval import psnr, ssim
from shared.preprocess import prepare, to_uint8_image
from shared.runtime import SpicCodec

# A step up the ladder counts as better only past these gains: v1's QF 16 -> 48 -> 128 gained
# 0.003 dB, rising in name only.
MIN_STEP = {"mean_bytes": 1.0, "psnr": 0.1, "ssim": 0.002}


def rising(points: list[dict], key: str) -> bool:
    values = [p[key] for p in points]
    return all(b - a >= MIN_STEP[key] for a, b in zip(values, values[1:], strict=False))


def measure_ladder(bundle: Path, images: list[Image.Image], threads: int = 2) -> list[dict]:
    """One point per QF of ``bundle``, lowest first: mean bytes, bpp over the crop, PSNR, SSIM."""
    runtime = SpicCodec(bundle, threads=threads)
    encoder = EdgeEncoder(bundle, threads=threads, cache_dir=False)
    inputs = [prepare(im, encoder.spec, encoder.stride) for im in images]
    crops = [to_uint8_image(x) for x in inputs]
    # One network pass per photo serves every QF (encode_latent gives encode()'s bytes).
    latents = [encoder.latent(x) for x in inputs]
    points = []
    for qf in sorted(runtime.manifest.qfs):
        sizes, scores, sims = [], [], []
        for im, crop, y in zip(images, crops, latents, strict=True):
            data = encoder.encode_latent(y, im.size, qf)
            _, symbols = runtime.codebook.decode(data)
            image = runtime.reconstruct(runtime.latents([symbols], [qf]), qf)[0]
            sizes.append(len(data))
            scores.append(psnr(crop, image))
            sims.append(ssim(crop, image))
        pixels = crops[0].shape[0] * crops[0].shape[1]
        points.append(
            {
                "qf": qf,
                "mean_bytes": round(float(np.mean(sizes)), 1),
                "bpp": round(8 * float(np.mean(sizes)) / pixels, 4),
                "psnr": round(float(np.mean(scores)), 3),
                "ssim": round(float(np.mean(sims)), 4),
            }
        )
    return points
