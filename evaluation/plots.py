"""Plots and the Markdown report of spic-eval."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cloud_service.runtime import BundleRuntime  # noqa: E402
from edge_client.encoder import EdgeEncoder  # noqa: E402
from edge_client.preprocess import center_crop, load_rgb, resize_short_side  # noqa: E402
from evaluation import baselines  # noqa: E402

STYLE = {
    "spic-rans": ("SPIC-Q (rANS)", "o-"),
    "spic-huffman": ("SPIC-Q (Huffman)", "s--"),
    "jpeg": ("JPEG + SPIC-U", "^-"),
    "webp": ("WebP + SPIC-U", "v-"),
    "avif": ("AVIF + SPIC-U", "D-"),
}


def _series(rows: list[dict], codec: str, key: str):
    pts = sorted(
        (r["bpp"], r[key])
        for r in rows
        if r["codec"] == codec
        and r["bpp"] is not None
        and r[key] is not None
        and not r["setting"].startswith("matched")
    )
    return [p[0] for p in pts], [p[1] for p in pts]


def rate_plots(result: dict, out: Path) -> None:
    metrics = [("psnr", "PSNR (dB)"), ("ssim", "SSIM")]
    if result["labelled"]:
        metrics.insert(0, ("top1", "top-1 accuracy"))
    for key, label in metrics:
        fig, ax = plt.subplots(figsize=(6, 4))
        for codec, (name, style) in STYLE.items():
            x, y = _series(result["rows"], codec, key)
            if x:
                ax.plot(x, y, style, label=name)
        if key == "top1":
            unc = [r["top1"] for r in result["rows"] if r["setting"] == "unquantized"]
            if unc:
                ax.axhline(unc[0], color="gray", ls=":", label="SPIC, latent unquantized")
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (whole file / frame, 224² crop)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{key}_vs_bpp.png", dpi=120)
        plt.close(fig)


def crop_grid(bundle: Path, paths: list[Path], size: int, result: dict, path: Path) -> None:
    """The same crops: original, SPIC at each QF, and each codec at the quality matched to a QF."""
    runtime = BundleRuntime(bundle)
    matched = [r for r in result["rows"] if r["setting"].startswith("matched")]
    qfs = (
        sorted({int(r["setting"].split("QF")[1].split(":")[0]) for r in matched})
        or runtime.manifest.qfs
    )
    mid_qf = qfs[len(qfs) // 2]
    cols = ["original"] + [f"SPIC QF{q}" for q in qfs]
    codec_q = {
        r["codec"]: int(r["setting"].split(":q")[1])
        for r in matched
        if f"QF{mid_qf}:" in r["setting"]
    }
    cols += [f"{c.upper()} q{q}" for c, q in codec_q.items()]
    fig, axes = plt.subplots(
        len(paths), len(cols), figsize=(2 * len(cols), 2 * len(paths)), squeeze=False
    )
    encoders = {q: EdgeEncoder(bundle, qf=q) for q in qfs}
    for i, p in enumerate(paths):
        im = load_rgb(p)
        crop = np.asarray(center_crop(resize_short_side(im, size), size))
        tiles = [crop]
        for q in qfs:
            _, symbols = runtime.codebook.decode(encoders[q].encode(im))
            tiles.append(runtime.reconstruct_latents(runtime.latents([symbols], [q]))[0])
        tiles += [baselines.decode(baselines.encode(c, crop, q)) for c, q in codec_q.items()]
        for j, tile in enumerate(tiles):
            axes[i][j].imshow(tile)
            axes[i][j].axis("off")
            if i == 0:
                axes[i][j].set_title(cols[j], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _matched(matched: list[dict], codec: str, spic_row: dict) -> dict:
    """The baseline row of ``codec`` at the quality matched to a SPIC rate point."""
    return next(
        x
        for x in matched
        if x["codec"] == codec and x["setting"].startswith(f"matched-{spic_row['setting']}:")
    )


def _fmt(v, pct=False):
    if v is None:
        return "n/a"
    return f"{100 * v:.2f}%" if pct else f"{v:.4f}" if v < 10 else f"{v:.2f}"


def report(result: dict) -> str:
    rows = result["rows"]
    lines = [
        f"# SPIC against standard codecs on `{result['dataset']}`",
        "",
        f"Bundle `{result['bundle_id']}`, {result['size']}² center crops. bpp = bits per pixel of the "
        "crop, counting the whole frame or file (header included). Reproduce with:",
        "",
        "```bash",
        result["command"],
        "```",
        "",
    ]
    spic = [r for r in rows if r["codec"] == "spic-rans"]
    matched = [r for r in rows if r["setting"].startswith("matched")]
    codecs = sorted({r["codec"] for r in matched})
    if result["labelled"]:
        unq = next((r for r in rows if r["setting"] == "unquantized"), None)
        unc = next((r for r in rows if r["setting"] == "uncompressed"), None)
        lines += [
            "## Top-1 at matched rates (the paper's table)",
            "",
            "| rate point | SPIC-Q bpp | SPIC-Q top-1 | "
            + " | ".join(f"{c.upper()} + SPIC-U (bpp, top-1)" for c in codecs)
            + " |",
            "|---|---|---|" + "---|" * len(codecs),
        ]
        if unq and unc:
            lines.append(
                f"| uncompressed | — | {_fmt(unq['top1'], True)} (latent unquantized) | "
                + " | ".join(f"— , {_fmt(unc['top1'], True)}" for _ in codecs)
                + " |"
            )
        for r in spic:
            cells = []
            for c in codecs:
                m = _matched(matched, c, r)
                cells.append(
                    f"{_fmt(m['bpp'])}, {_fmt(m['top1'], True)} ({m['setting'].split(':')[1]})"
                )
            lines.append(
                f"| {r['setting']} | {_fmt(r['bpp'])} | {_fmt(r['top1'], True)} | "
                + " | ".join(cells)
                + " |"
            )
        lines.append("")
    lines += [
        "## Reconstruction quality at matched rates",
        "",
        "| rate point | SPIC bpp | SPIC PSNR / SSIM | "
        + " | ".join(f"{c.upper()} bpp, PSNR / SSIM" for c in codecs)
        + " |",
        "|---|---|---|" + "---|" * len(codecs),
    ]
    for r in spic:
        cells = []
        for c in codecs:
            m = _matched(matched, c, r)
            cells.append(f"{_fmt(m['bpp'])}, {m['psnr']:.2f} / {m['ssim']:.3f}")
        lines.append(
            f"| {r['setting']} | {_fmt(r['bpp'])} | {r['psnr']:.2f} / {r['ssim']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", *verdict(rows, spic, matched, codecs, result["labelled"])]
    lines += [
        "",
        "## All rows",
        "",
        "| codec | setting | classifier | bpp | top-1 | PSNR | SSIM | images |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['codec']} | {r['setting']} | {r['classifier']} | {_fmt(r['bpp'])} | {_fmt(r['top1'], True)} | "
            f"{_fmt(r['psnr'])} | {_fmt(r['ssim'])} | {r['n_images']} |"
        )
    lines += [
        "",
        "Plots: `top1_vs_bpp.png`, `psnr_vs_bpp.png`, `ssim_vs_bpp.png`; the same crops by each codec: `crops.png`.",
        "",
    ]
    return "\n".join(lines)


def verdict(rows, spic, matched, codecs, labelled: bool) -> list[str]:
    """Where SPIC wins and where it loses, computed from the rows, in plain words."""
    out = ["## Where SPIC wins and where it loses", ""]
    for r in spic:
        for c in codecs:
            m = _matched(matched, c, r)
            ratio = m["bpp"] / r["bpp"]
            reach = (
                "matches its rate"
                if ratio <= 1.05
                else f"cannot go that low: at its lowest setting ({m['setting'].split(':')[1]}) it spends {ratio:.1f}x the bits"
            )
            acc = ""
            if labelled:
                d = 100 * (r["top1"] - m["top1"])
                words = (
                    "the same"
                    if abs(d) < 0.005
                    else f"{abs(d):.2f} points {'higher' if d > 0 else 'lower'}"
                )
                acc = (
                    f"; SPIC-Q top-1 is {words} ({100 * r['top1']:.2f}% vs {100 * m['top1']:.2f}%)"
                )
            look = f"; reconstruction PSNR {r['psnr']:.2f} vs {m['psnr']:.2f} dB, SSIM {r['ssim']:.3f} vs {m['ssim']:.3f}"
            out.append(
                f"- {r['setting']} ({r['bpp']:.4f} bpp) against {c.upper()}: {c.upper()} {reach}{acc}{look}."
            )
    return out
