"""make demo: the whole system on one machine, with the shipped default model.

Starts the cloud (``spic-cloud serve``) on 127.0.0.1, encodes sample photos on the edge path
(scikit-image's photos, plus any folder given with --images / IMAGES=), uploads each frame,
prints a table against a JPEG of the same crop at quality 75 (a typical camera upload), writes
the cloud's reconstructions to demo_out/, then prints the dashboard's address, its read key and a
curl line for the query API, and keeps the cloud running until Ctrl-C (``DEMO_EXIT=1``: stop at
once). The results store is SQLite under demo_out/data.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from cloud_service.harness import start_cloud, stop  # noqa: E402
from edge_client.client import CloudClient  # noqa: E402
from edge_client.encoder import EdgeEncoder  # noqa: E402
from evaluation.samples import SAMPLE_PHOTOS, sample_images  # noqa: E402
from shared.bundles import DEFAULT_BUNDLE  # noqa: E402
from shared.preprocess import IMAGE_SUFFIXES, load_rgb, resize_center_crop  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--images", type=Path, help="a folder of your own images, added to the samples")
    ap.add_argument("--out", type=Path, default=ROOT / "demo_out")
    args = ap.parse_args()
    named = list(zip(SAMPLE_PHOTOS, sample_images(None), strict=True))
    if args.images:
        named += [
            (p.stem, load_rgb(p))
            for p in sorted(args.images.iterdir())
            if p.suffix.lower() in IMAGE_SUFFIXES
        ]
    args.out.mkdir(parents=True, exist_ok=True)
    key, read_key = uuid.uuid4().hex, uuid.uuid4().hex[:12]
    print(f"demo: starting the cloud on 127.0.0.1 with {args.bundle.name} ...", flush=True)
    cloud, url = start_cloud(
        [args.bundle], api_keys=key, read_keys=read_key, data_dir=args.out / "data"
    )
    try:
        encoder = EdgeEncoder(args.bundle, threads=1)
        client = CloudClient(url, api_key=key, device_id="demo-camera")
        size = encoder.manifest.preprocessing.size
        header = f"{'image':22s} {'SPIC B':>7s} {'bpp':>7s} {'JPEG Q75 B':>10s} {'x smaller':>9s}  {'prediction':24s} {'conf':>6s} {'edge ms':>8s} {'cloud ms':>8s}"
        print(
            f"\nQF {encoder.qf}, {encoder.codec_name}, {size}x{size} center crops; bpp = bits per pixel of the crop\n"
        )
        print(header)
        print("-" * len(header))
        for name, im in named:
            res = encoder.encode_timed(im)
            crop = resize_center_crop(im, size, size)
            buf = io.BytesIO()
            crop.save(buf, format="JPEG", quality=75)
            key_ = f"demo-{name}-{uuid.uuid4().hex[:8]}"
            t0 = time.perf_counter()
            answer = client.classify(res.data, key_, captured_at=time.time())
            cloud_ms = (time.perf_counter() - t0) * 1e3
            png = client.reconstruct(res.data, key_ + "-r")
            Image.open(io.BytesIO(png)).save(args.out / f"{name}_spic.png")
            crop.save(args.out / f"{name}_crop.png")
            (args.out / f"{name}.spic").write_bytes(res.data)
            # A photo unlike the head's classes is answered unknown (label null), with its scores.
            label = answer["label"] or f"unknown ({answer['top_k'][0]['label']})"
            print(
                f"{name:22s} {len(res.data):7d} {res.bpp:7.4f} {buf.tell():10d} {buf.tell() / len(res.data):9.1f}  "
                f"{label:24s} {answer['confidence']:6.1%} {sum(res.timings_ms.values()):8.2f} {cloud_ms:8.2f}"
            )
        print(f"\ndemo: reconstructions and frames written to {args.out}/")
        print(f"\ndemo: dashboard   {url}/   (read key: {read_key})")
        print(
            f'demo: query API   curl -H "Authorization: Bearer {read_key}" "{url}/v1/frames?limit=3"'
        )
        if os.environ.get("DEMO_EXIT") != "1":
            print("demo: the cloud keeps running; Ctrl-C to stop (DEMO_EXIT=1 stops at once)")
            try:
                while cloud.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    finally:
        stop(cloud)
        print("demo: cloud stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
