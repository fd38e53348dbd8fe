"""spic-card --bundle B --data VAL_DIR: measure a bundle on real bytes and write its model card.

Replaces the "## Results" section of ``B/MODEL_CARD.md`` with a table of uncompressed top-1, and
per QF and codec the mean bpp (real frame bytes, header included, over 224² pixels), top-1, PSNR
and SSIM, next to the exact command that produced them; the raw rows go to ``B/eval.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

from evaluation.spic_eval import evaluate_spic, labelled_images, rows_to_dicts
from shared.manifest import Measurements, OperatingPoint, load_manifest, record_measurements

TARGETS = (  # (bpp at most, top-1 loss at most, in points): the targets of the default bundle
    (0.10, 3.0),
    (0.25, 1.0),
)


def target_lines(rows: list[dict], unq: dict) -> list[str]:
    """Whether the targets are met, computed from the rows (FP32 encoder, best codec per QF)."""
    lines = ["Targets (val, real bytes):", ""]
    ok = unq["top1"] >= 0.80
    lines.append(
        f"- uncompressed top-1 ≥ 80%: **{'met' if ok else 'missed'}** ({100 * unq['top1']:.2f}%"
        + ("" if ok else f", {100 * (0.80 - unq['top1']):.2f} points short")
        + ")"
    )
    points = [r for r in rows if r["setting"] != "unquantized" and "INT8" not in r["classifier"]]
    for max_bpp, max_loss in TARGETS:
        fits = [r for r in points if r["bpp"] <= max_bpp]
        best = max(fits, key=lambda r: r["top1"], default=None)
        if best is None:
            lowest = min(points, key=lambda r: r["bpp"])
            lines.append(
                f"- a point at ≤ {max_bpp} bpp losing ≤ {max_loss} points: **missed** (lowest rate "
                f"{lowest['bpp']:.4f} bpp, {lowest['setting']} {lowest['codec']})"
            )
            continue
        loss = 100 * (unq["top1"] - best["top1"])
        verdict = "met" if loss <= max_loss else "missed"
        lines.append(
            f"- a point at ≤ {max_bpp} bpp losing ≤ {max_loss} points: **{verdict}** ({best['setting']} "
            f"{best['codec'].removeprefix('spic-')}: {best['bpp']:.4f} bpp, {loss:+.2f} points lost)"
        )
    return lines


def results_markdown(rows: list[dict], command: str, dataset: str, macs_gflop: str | None) -> str:
    unq = next(r for r in rows if r["setting"] == "unquantized" and "INT8" not in r["classifier"])
    lines = [
        "## Results",
        "",
        f"On `{dataset}`, {unq['n_images']} images, 224² center crops. bpp = bits of the whole frame",
        "(header and CRC included) per pixel of the 224² crop; every frame was really encoded by",
        "`EdgeEncoder`, decoded by the cloud codebook, and classified on the latent.",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Uncompressed (latent not quantized) top-1: **{100 * unq['top1']:.2f}%**",
        "",
        "| QF | codec | encoder | mean bpp | top-1 | Δ top-1 vs uncompressed | PSNR (dB) | SSIM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["setting"] == "unquantized":
            continue
        enc = "INT8" if "INT8" in r["classifier"] else "FP32"
        lines.append(
            f"| {r['setting'][2:]} | {r['codec'].removeprefix('spic-')} | {enc} | {r['bpp']:.4f} | {100 * r['top1']:.2f}% | "
            f"{100 * (r['top1'] - unq['top1']):+.2f} | {r['psnr']:.2f} | {r['ssim']:.4f} |"
        )
    lines += ["", *target_lines(rows, unq)]
    if macs_gflop:
        lines += ["", f"Encoder cost: {macs_gflop} per 224² frame (see above)."]
    return "\n".join(lines) + "\n"


def measurements(rows: list[dict], command: str, dataset: str) -> Measurements:
    """The manifest's per-QF operating points, from the card's latent-classifier rows."""
    points = [
        OperatingPoint(
            qf=int(r["setting"].removeprefix("QF")),
            codec=r["codec"].removeprefix("spic-"),
            encoder="int8" if "INT8" in r["classifier"] else "fp32",
            bpp=r["bpp"],
            top1=r["top1"],
            psnr=r["psnr"],
            ssim=r["ssim"],
        )
        for r in rows
        if r["classifier"].startswith("SPIC-Q") and r["setting"].startswith("QF")
    ]
    n_images = max(int(r["n_images"]) for r in rows)
    return Measurements(dataset=dataset, n_images=n_images, command=command, points=points)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="spic-card", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--data", required=True, help="labelled ImageFolder split, e.g. imagenette/val")
    p.add_argument("--limit", type=int, help="seeded class-balanced subset of this many images")
    p.add_argument(
        "--int8", action="store_true", help="also evaluate the bundle's INT8 encoder (rANS)"
    )
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    bundle = Path(args.bundle)
    manifest = load_manifest(bundle)
    paths, labels, classes = labelled_images(args.data, args.limit)
    if classes != [c.id for c in manifest.classes]:
        raise SystemExit(
            f"the data's classes {classes} are not the bundle's {[c.id for c in manifest.classes]}"
        )
    rows = rows_to_dicts(evaluate_spic(bundle, paths, labels, progress=not args.no_progress))
    if args.int8:
        rows += rows_to_dicts(
            evaluate_spic(
                bundle, paths, labels, codecs=("rans",), progress=not args.no_progress, int8=True
            )
        )
    command = "spic-card " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    (bundle / "eval.json").write_text(
        json.dumps(
            {"model_id": manifest.model_id, "command": command, "dataset": args.data, "rows": rows},
            indent=1,
        )
        + "\n"
    )
    record_measurements(bundle, measurements(rows, command, args.data))
    card_path = bundle / "MODEL_CARD.md"
    card = card_path.read_text()
    gflop = re.search(r"\*\*([0-9.]+ GFLOP)\*\*", card)
    section = results_markdown(rows, command, args.data, gflop.group(1) if gflop else None)
    card = re.sub(r"## Results\n.*", lambda _: section, card, flags=re.S)
    card = re.sub(r"Model id `[0-9a-f]+`", f"Model id `{manifest.model_id}`", card)
    card_path.write_text(card)
    print(json.dumps({"model_id": manifest.model_id, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
