"""Decoders per QF: today's vs new ones vs WebP and AVIF at the same bytes (issue 35, item 4).

    PYTHONPATH=. .venv/bin/python bench/decoder.py --codec models/bundles/spic-imagenette \\
        --cache ARTIFACTS/decoder-cache \\
        --decoder ARTIFACTS/decoder-qf1-16-mse --decoder ARTIFACTS/decoder-qf1-16-ssim

Every number is on the same seeded val subset (``--val-limit``, ``models.data.seeded_subset``) of
the latent cache (``spic-decoder cache``): the frozen codec's base latent at each QF, decoded by
the bundle's decoder.onnx and by each decoder folder (``shared.decoders``), and each image's own
frame size at that QF given to WebP and AVIF (``bench/same_bytes.py``). PSNR and SSIM as
``spic-card`` (uint8 pictures, scikit-image SSIM). A decoder whose decoder.json was measured on
the same subset is not decoded again (``--remeasure`` forces it). Writes the summary to
docs/results/bench/decoder.json, a side-by-side picture per QF (original | today | new | WebP |
AVIF, 96² centre crops) to docs/results/decoder/, and prints the summary as its last line.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from bench.same_bytes import FORMATS, Encoder, fit
from models.decoder_cache import LatentCache
from models.decoder_measure import graph_decoder, measure, psnr, quantized, ssim, val_indices
from shared.decoders import Decoder
from shared.preprocess import to_uint8_image
from shared.runtime import SpicCodec

ROOT = Path(__file__).resolve().parent.parent


def same_bytes(
    job: tuple[np.ndarray, list[int]],
) -> dict[tuple[str, int], tuple[float, float, int, bool]]:
    """One image, each format at each budget: (format, budget's index) -> PSNR, SSIM, bytes, fits."""
    image, budgets = job
    out = {}
    for fmt in FORMATS:
        enc = Encoder(image, fmt)
        for j, budget in enumerate(budgets):
            f = fit(enc, budget, psnr, ssim)
            out[fmt, j] = (f.psnr, f.ssim, f.bytes, f.fits)
    return out


def baselines(
    cache: LatentCache, keep: np.ndarray, qfs: list[int], path: Path | None, workers: int = 2
) -> dict[str, dict[str, dict[str, float]]]:
    """QF -> format -> mean PSNR, SSIM, bytes and the share that fit; kept in ``path``."""
    key = {"n": len(keep), "qfs": qfs, "codec_id": cache.codec_id}
    if path is not None and path.is_file():
        saved = json.loads(path.read_text())
        if saved["key"] == key:
            return dict(saved["result"])
    assert cache.frame_bytes is not None, "the val cache has no frame sizes (spic-decoder cache)"
    rows: dict[tuple[int, str], list[tuple[float, float, int, bool]]] = {}
    jobs = [(np.asarray(cache.images[i]), [int(b) for b in cache.frame_bytes[i]]) for i in keep]
    # Two worker processes: AVIF's encoder dominates and runs one image per core.
    with ProcessPoolExecutor(workers) as pool:
        for n, fitted in enumerate(pool.map(same_bytes, jobs, chunksize=4)):
            for (fmt, j), f in fitted.items():
                rows.setdefault((qfs[j], fmt), []).append(f)
            if n % 50 == 0:
                print(f"same bytes: {n}/{len(keep)}", file=sys.stderr, flush=True)
    result: dict[str, dict[str, dict[str, float]]] = {}
    for (qf, fmt), r in rows.items():
        a = np.asarray(r, dtype=np.float64)
        result.setdefault(str(qf), {})[fmt.lower()] = {
            "psnr": float(a[:, 0].mean()),
            "ssim": float(a[:, 1].mean()),
            "bytes": float(a[:, 2].mean()),
            "fits": float(a[:, 3].mean()),
        }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"key": key, "result": result}))
    return result


def label(width: int, names: list[str]) -> Image.Image:
    bar = Image.new("RGB", (width * len(names), 12), "white")
    draw = ImageDraw.Draw(bar)
    for k, name in enumerate(names):
        draw.text((k * width + 2, 0), name, fill="black")
    return bar


def pictures(
    codec: SpicCodec,
    cache: LatentCache,
    images: list[int],
    qfs: list[int],
    new: Decoder | None,
    out: Path,
    crop: int = 96,
) -> list[str]:
    """One PNG per QF: rows of 96² centre crops, original | today | new | WebP | AVIF."""
    out.mkdir(parents=True, exist_ok=True)
    today = graph_decoder(codec.path / codec.manifest.files["decoder"].path)
    assert cache.frame_bytes is not None
    lo = (cache.images.shape[1] - crop) // 2
    written = []
    for j, qf in enumerate(qfs):
        rows = []
        for i in images:
            ref = np.asarray(cache.images[i])
            y = quantized(torch.from_numpy(np.asarray(cache.y[i : i + 1])), qf)
            panels = [ref, today(y.numpy())[0]]
            if new is not None:
                panels.append(to_uint8_image(new.run(y.numpy()))[0])
            for fmt in FORMATS:
                panels.append(
                    fit(Encoder(ref, fmt), int(cache.frame_bytes[i, j]), psnr, ssim).picture
                )
            rows.append(np.concatenate([p[lo : lo + crop, lo : lo + crop] for p in panels], axis=1))
        names = ["original", "today"] + (["new"] if new is not None else []) + ["WebP", "AVIF"]
        grid = Image.fromarray(np.concatenate(rows, axis=0))
        sheet = Image.new("RGB", (grid.width, grid.height + 12), "white")
        sheet.paste(label(crop, names), (0, 0))
        sheet.paste(grid, (0, 12))
        # A 256-colour palette in lossless WebP keeps each sheet to tens of kB (the tree's
        # budget; 15% under the same palette as PNG).
        path = out / f"qf{qf}.webp"
        paletted = sheet.quantize(256, dither=Image.Dither.NONE).convert("RGB")
        paletted.save(path, lossless=True, method=6)
        written.append(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--codec", type=Path, default=ROOT / "models" / "bundles" / "spic-imagenette")
    ap.add_argument("--cache", type=Path, required=True, help="spic-decoder cache's folder")
    ap.add_argument("--decoder", type=Path, action="append", default=[], help="decoder folder")
    ap.add_argument("--qfs", default="1,2,4,8,16")
    ap.add_argument("--val-limit", type=int, default=500)
    ap.add_argument(
        "--same-bytes-limit",
        type=int,
        default=None,
        help="WebP/AVIF on the first N of the same seeded order (default: --val-limit)",
    )
    ap.add_argument("--remeasure", action="store_true", help="decode even when measured alike")
    ap.add_argument("--baselines", type=Path, default=None, help="keep WebP/AVIF results here")
    ap.add_argument("--json", type=Path, default=ROOT / "docs/results/bench/decoder.json")
    ap.add_argument("--pictures", type=Path, default=ROOT / "docs/results/decoder")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    codec = SpicCodec(a.codec, threads=a.threads)
    cache = LatentCache(a.cache, "val")
    if cache.codec_id != codec.model_id:
        raise SystemExit(f"cache of codec {cache.codec_id}, not {codec.model_id}")
    qfs = [int(q) for q in a.qfs.split(",")]
    assert cache.meta["frame_qfs"] == qfs, (
        f"the cache's frame sizes are for {cache.meta['frame_qfs']}"
    )
    keep = val_indices(len(cache), a.val_limit)
    today_graph = graph_decoder(codec.path / codec.manifest.files["decoder"].path)
    today = measure(today_graph, cache, qfs, len(keep))
    new: dict[str, dict[str, object]] = {}
    opened = []
    for folder in a.decoder:
        d = Decoder.open(folder, threads=a.threads)
        codec.add_decoder(d)  # refuses one of another codec
        opened.append(d)
        m = d.manifest.measured
        if m is not None and m.n_val == len(keep) and not a.remeasure:
            per_qf = m.per_qf
        else:
            per_qf = measure(
                graph_decoder(folder / d.manifest.files["graph"].path, a.threads),
                cache,
                [q for q in qfs if d.serves(q)],
                len(keep),
            )
        new[d.name] = {
            "decoder_id": d.decoder_id,
            "folder": str(folder),
            "per_qf": per_qf,
            "loss": m.loss if m else None,
            "train_seconds": m.train_seconds if m else None,
            "command": m.command if m else None,
        }
    keep_sb = val_indices(len(cache), a.same_bytes_limit or len(keep))
    base = baselines(cache, keep_sb, qfs, a.baselines)
    # Today's decoder on the WebP/AVIF subset too, so that a smaller subset's shift shows.
    today_sb = (
        today if len(keep_sb) == len(keep) else measure(today_graph, cache, qfs, len(keep_sb))
    )
    assert cache.frame_bytes is not None
    size = cache.images.shape[1]
    table = {}
    for j, qf in enumerate(qfs):
        frame = float(cache.frame_bytes[keep, j].mean())
        table[str(qf)] = {
            "frame_bytes": frame,
            "bpp": frame * 8 / size**2,
            "today": today[str(qf)],
            "new": {n: v["per_qf"][str(qf)] for n, v in new.items() if str(qf) in v["per_qf"]},  # type: ignore[index,operator]
            **base[str(qf)],
            "today_on_same_bytes_subset": today_sb[str(qf)],
        }
    best = {
        qf: max((v["psnr"] for v in t["new"].values()), default=None) for qf, t in table.items()
    }
    gain = {
        qf: (b - table[qf]["today"]["psnr"]) if b is not None else None for qf, b in best.items()
    }
    picked = [int(keep[0]), int(keep[len(keep) // 2])]
    written = pictures(codec, cache, picked, qfs, opened[0] if opened else None, a.pictures)
    summary = {
        "benchmark": "decoder",
        "codec_id": codec.model_id,
        "codec_id_after_adding_decoders": codec.model_id,
        "val": f"{len(keep)} of {len(cache)} ({cache.meta['root']}, models.data.seeded_subset)",
        "val_same_bytes": f"the first {len(keep_sb)} of the same seeded order (webp, avif)",
        "decoders": {n: {k: v for k, v in d.items() if k != "per_qf"} for n, d in new.items()},
        "per_qf": table,
        "best_new_gain_db": gain,
        "floor_2db_at_qf4_and_qf16": all((gain.get(q) or 0) >= 2 for q in ("4", "16")),
        "goal_avif_psnr_at_qf4": (best.get("4") or 0) >= table["4"]["avif"]["psnr"]
        if "4" in table
        else None,
        "pictures": written,
        "command": "PYTHONPATH=. python bench/decoder.py " + shlex.join(argv),
    }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
