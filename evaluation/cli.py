"""spic-eval --bundle B --data DIR --out OUT [--limit N] [--qf ...] [--codecs jpeg webp avif]

Tests the paper's claim on real bytes: at equal bits, does the learned representation keep more
classification accuracy than standard codecs? On a labelled ImageFolder split (``DIR/<class>/*``)
or on any folder of images (rate and reconstruction only), at ``--size``² center crops:

* SPIC-Q rows: every image encoded to a real frame by the edge path, decoded by the cloud path,
  classified on the latent; mean bpp from the real frame bytes; PSNR/SSIM of the reconstruction.
* Baseline rows: JPEG, WebP and AVIF (Pillow) at the quality matched by bisection to each SPIC rate
  point, and at a fixed ladder of qualities. The decoded images are classified by SPIC-U (the
  same network, latent unquantized) and by every ``--reference`` bundle: pixel-domain CNNs trained
  by ``spic-train-reference``, one of them fine-tuned on images decoded at the matched quality.
  The references also classify SPIC's own reconstructions.

Writes ``OUT/results.json``, ``OUT/report.md`` and one plot (top-1 against bpp; ``--all-plots``:
PSNR and SSIM too, and a grid of the same crops by each codec).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge_client.encoder import EdgeEncoder
from evaluation import plots, report
from evaluation.pairs import hits_string
from evaluation.reference import ReferenceClassifier
from evaluation.spic_eval import Row, evaluate_spic, labelled_images, psnr, ssim
from models import baselines
from models.data import DATA_HELP, split_folder
from shared.manifest import load_manifest
from shared.preprocess import (
    IMAGE_SUFFIXES,
    batch_input,
    load_rgb,
    resize_center_crop,
)
from shared.runtime import SpicCodec

CALIBRATION_IMAGES = 200  # bisection runs on a seeded subset; the chosen quality then on all


def load_split(data: Path, limit: int | None, class_ids: list[str]):
    subdirs = sorted(p.name for p in data.iterdir() if p.is_dir())
    if subdirs and set(subdirs) <= set(class_ids):
        paths, labels, classes = labelled_images(data, limit)
        index = {c: class_ids.index(c) for c in classes}
        return paths, np.array([index[classes[i]] for i in labels])
    paths = sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit:
        paths = [paths[i] for i in sorted(np.random.default_rng(0).permutation(len(paths))[:limit])]
    return paths, None


def read_results(folder: Path) -> dict:
    """A run's results.json, or results.json.gz (how docs/results keeps the large ones)."""
    plain = folder / "results.json"
    if plain.is_file():
        result: dict = json.loads(plain.read_text())
        return result
    with gzip.open(folder / "results.json.gz", "rt") as f:
        packed: dict = json.load(f)
        return packed


def spic_u(runtime: SpicCodec, encoder: EdgeEncoder, crops: list[np.ndarray]) -> np.ndarray:
    """Predictions of the same network with its latent unquantized, for decoded pixels."""
    preds = []
    for i in range(0, len(crops), 50):
        y = encoder.session.run(None, {"image": batch_input(crops[i : i + 50])})[0]
        preds.append(runtime.classify_latents(y).argmax(1))
    return np.concatenate(preds)


def pixel_classifiers(
    runtime: SpicCodec, encoder: EdgeEncoder, references: list[Path]
) -> tuple[dict[str, Callable[[list[np.ndarray]], np.ndarray]], list[dict]]:
    """SPIC-U plus every reference bundle, by name; and what each reference is, for the results."""
    class_ids = [c.id for c in runtime.manifest.classes]
    found: dict[str, Callable[[list[np.ndarray]], np.ndarray]] = {
        "SPIC-U": lambda crops: spic_u(runtime, encoder, crops)
    }
    described = []
    for bundle in references:
        clf = ReferenceClassifier(bundle)
        clf.check_classes(class_ids)
        if clf.label in found:
            raise SystemExit(f"two classifiers are both called {clf.label!r}")
        found[clf.label] = clf.predict
        m = clf.manifest
        described.append(
            {
                "label": clf.label,
                "model_id": m.model_id,
                "architecture": m.architecture,
                "finetune": m.finetune.model_dump() if m.finetune else None,
            }
        )
    return found, described


def scored(correct: np.ndarray) -> tuple[float, str]:
    """Top-1 and the per-image outcomes (``Row.hits``) of one classifier's right/wrong array."""
    return float(correct.mean()), hits_string(correct)


class BaselineRows:
    """Rows of one codec at one quality: encoded, decoded and classified once, however often asked.

    Codecs bottom out at their lowest quality, so several SPIC rate points often match the same
    (codec, quality), which is also on the ladder; the cache makes those free.
    """

    def __init__(self, crops: list[np.ndarray], labels: np.ndarray | None, classifiers: dict):
        self.crops, self.labels, self.classifiers = crops, labels, classifiers
        self._cache: dict[tuple[str, int], list[Row]] = {}

    def __call__(self, codec: str, quality: int, setting: str | None = None) -> list[Row]:
        key = (codec, quality)
        if key not in self._cache:
            self._cache[key] = self._compute(codec, quality)
        return [replace(r, setting=setting or r.setting) for r in self._cache[key]]

    def _compute(self, codec: str, quality: int) -> list[Row]:
        bpps, decoded = [], []
        for c in self.crops:
            data, image = baselines.round_trip(codec, c, quality)
            bpps.append(8 * len(data) / (c.shape[0] * c.shape[1]))
            decoded.append(image)
        bpp = float(np.mean(bpps))
        p = float(np.mean([psnr(a, b) for a, b in zip(self.crops, decoded, strict=True)]))
        s = float(np.mean([ssim(a, b) for a, b in zip(self.crops, decoded, strict=True)]))
        rows = []
        for name, classify in self.classifiers.items():
            top1 = hits = None
            if self.labels is not None:
                top1, hits = scored(classify(decoded) == self.labels)
            rows.append(Row(codec, f"q{quality}", name, bpp, top1, p, s, len(self.crops), hits))
        return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="spic-eval", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help=DATA_HELP.format(split="val"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--limit", type=int, help="seeded, class-balanced subset of this many images")
    p.add_argument("--qf", type=int, nargs="+", help="SPIC QFs (default: the bundle's)")
    p.add_argument(
        "--codecs", nargs="+", default=["jpeg", "webp", "avif"], choices=sorted(baselines.CODECS)
    )
    p.add_argument(
        "--reference",
        type=Path,
        nargs="+",
        default=[],
        metavar="BUNDLE",
        help="reference-classifier bundles (spic-train-reference) that also classify decoded pixels",
    )
    p.add_argument("--size", type=int, help="center-crop size (default: the bundle's)")
    p.add_argument("--no-ladder", action="store_true", help="skip the fixed quality ladders")
    p.add_argument(
        "--rerender",
        action="store_true",
        help="rewrite report.md and plots from OUT/results.json (or results.json.gz)",
    )
    p.add_argument("--all-plots", action="store_true", help="PSNR and SSIM plots and crops.png too")
    args = p.parse_args(argv)
    if args.rerender:
        result = read_results(args.out)
        plots.rate_plots(result, args.out, args.all_plots)
        (args.out / "report.md").write_text(report.report(result))
        return 0
    manifest = load_manifest(args.bundle)
    size = args.size or manifest.preprocessing.size
    dataset = split_folder(args.data, "val")  # what was read, as results.json says
    paths, labels = load_split(dataset, args.limit, [c.id for c in manifest.classes])
    args.out.mkdir(parents=True, exist_ok=True)

    runtime = SpicCodec(args.bundle, threads=2)
    encoder = EdgeEncoder(args.bundle, threads=2)
    # Without labels only rate and reconstruction are measured, so no reference is loaded.
    classifiers, references = pixel_classifiers(
        runtime, encoder, args.reference if labels is not None else []
    )
    reference_only = {k: v for k, v in classifiers.items() if k != "SPIC-U"}
    rows = evaluate_spic(
        args.bundle,
        paths,
        labels,
        qfs=args.qf,
        codecs=("rans", "huffman"),
        pixel_classifiers=reference_only,
    )
    crops = [
        np.asarray(resize_center_crop(load_rgb(p), size, size)) for p in tqdm(paths, desc="crops")
    ]
    if labels is not None:
        for name, classify in classifiers.items():
            top1, hits = scored(classify(crops) == labels)
            rows.append(Row("none", "uncompressed", name, None, top1, None, None, len(crops), hits))
    baseline = BaselineRows(crops, labels, classifiers)
    calib = [
        crops[i]
        for i in sorted(np.random.default_rng(1).permutation(len(crops))[:CALIBRATION_IMAGES])
    ]
    for r in [r for r in rows if r.codec == "spic-rans" and r.classifier == "SPIC-Q"]:
        for codec in tqdm(args.codecs, desc=f"matching {r.setting}"):
            assert r.bpp is not None  # SPIC rows always carry their rate
            q = baselines.match_quality(codec, calib, r.bpp)
            rows += baseline(codec, q, f"matched-{r.setting}:q{q}")
    if not args.no_ladder:
        for codec in args.codecs:
            for q in tqdm(baselines.LADDER[codec], desc=f"{codec} ladder"):
                rows += baseline(codec, q)

    command = "spic-eval " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    result = {
        "dataset": str(dataset),
        "bundle_id": manifest.model_id,
        "command": command,
        "size": size,
        "labelled": labels is not None,
        "classifiers": list(classifiers) if labels is not None else [],
        "references": references,
        "rows": [asdict(r) for r in rows],
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    plots.rate_plots(result, args.out, args.all_plots)
    if args.all_plots:
        plots.crop_grid(args.bundle, paths[:4], size, result, args.out / "crops.png")
    (args.out / "report.md").write_text(report.report(result))
    print(json.dumps({"out": str(args.out), "rows": len(rows)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
