"""Adversarial load: does a client sending the largest frames the cloud accepts slow everyone else?

    .venv/bin/python bench/adversarial.py [--bundle B] [--seconds 10] [--heavy-clients 4]

One client sends ordinary 224² frames to /v1/classify back to back, first alone (the baseline)
and then while ``--heavy-clients`` clients send the largest whole-image frames the service
accepts (its max_input_pixels, 1 MiPx by default), alternating /v1/reconstruct and /v1/classify,
plus frames that declare a giant latent (refused from the header). The same server process serves
both phases. Reports the ordinary frame's p50/p99 in each phase and their ratio (the target is
at most 3), what the heavy clients got (served, shed with 503), and the server's peak RSS. The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.loadgen import LoadResult, closed_loop  # noqa: E402
from cloud_service.harness import cloud_process  # noqa: E402
from edge_client.encoder import EdgeEncoder  # noqa: E402
from evaluation.samples import sample_images  # noqa: E402
from shared import bitstream  # noqa: E402
from shared.bundles import DEFAULT_BUNDLE  # noqa: E402
from shared.manifest import ServingLimits  # noqa: E402

OCTET = {"Content-Type": "application/octet-stream"}


def largest_frames(bundle: Path) -> tuple[list[bytes], bytes]:
    """Whole-image frames at the default serving limit, and one declaring a giant latent."""
    limits = ServingLimits()
    encoder = EdgeEncoder(bundle, whole_image=True, cache_dir=False)
    stride = encoder.stride
    side = int(math.isqrt(limits.max_input_pixels)) // stride * stride
    rng = np.random.default_rng(0)
    frames = [
        encoder.encode(Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)))
        for _ in range(2)
    ]
    parsed = bitstream.unpack(frames[0])
    giant = dataclasses.replace(parsed, latent_shape=(parsed.latent_shape[0], 256, 256))
    return frames, bitstream.pack(dataclasses.replace(giant, image_size=(4096, 4096)))


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def phase(
    url: str, normal: list[bytes], heavy: list[bytes], giant: bytes, clients: int, seconds: float
):
    ordinary = closed_loop(url + "/v1/classify", normal, OCTET, 1, seconds)
    if not clients:
        return await ordinary, None
    heavy_result = LoadResult()

    async def attackers() -> None:
        half = max(1, clients // 2)
        await asyncio.gather(
            closed_loop(url + "/v1/reconstruct", heavy, OCTET, half, seconds, heavy_result),
            closed_loop(
                url + "/v1/classify", heavy + [giant], OCTET, clients - half, seconds, heavy_result
            ),
        )

    results = await asyncio.gather(ordinary, attackers())
    return results[0], heavy_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--heavy-clients", type=int, default=4)
    args = ap.parse_args()
    encoder = EdgeEncoder(args.bundle, cache_dir=False)
    normal = [encoder.encode(im) for im in sample_images(None)]
    heavy, giant = largest_frames(args.bundle)
    with cloud_process([args.bundle]) as (url, proc):
        asyncio.run(phase(url, normal, [], giant, 0, 2))  # warm-up
        alone, _ = asyncio.run(phase(url, normal, heavy, giant, 0, args.seconds))
        attacked, heavy_result = asyncio.run(
            phase(url, normal, heavy, giant, args.heavy_clients, args.seconds)
        )
        rss = peak_rss_mb(proc.pid)
    base, loaded = alone.summary(), attacked.summary()
    assert heavy_result is not None
    ratio = loaded["p50_ms"] / base["p50_ms"]
    print(f"ordinary frame alone:        p50 {base['p50_ms']} ms  p99 {base['p99_ms']} ms")
    print(
        f"with {args.heavy_clients} heavy clients:      p50 {loaded['p50_ms']} ms  p99 {loaded['p99_ms']} ms"
    )
    print(f"heavy clients: {heavy_result.summary()}")
    result = {
        "benchmark": "adversarial",
        "bundle": args.bundle.name,
        "cores": os.cpu_count(),
        "seconds": args.seconds,
        "heavy_clients": args.heavy_clients,
        "heavy_frame_bytes": [len(f) for f in heavy],
        "heavy_input": list(bitstream.unpack(heavy[0]).input_size),
        "ordinary_alone": base,
        "ordinary_with_heavy": loaded,
        "heavy": heavy_result.summary(),
        "p50_ratio": round(ratio, 2),
        "p99_ratio": round(loaded["p99_ms"] / base["p99_ms"], 2),
        "server_peak_rss_mb": round(rss, 1),
        "target_p50_ratio_at_most": 3.0,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
