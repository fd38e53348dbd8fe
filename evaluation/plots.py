"""The plots of spic-eval: rate curves and a grid of reconstructions (the report is in report.py)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from edge_client.encoder import EdgeEncoder  # noqa: E402
from evaluation.spic_eval import ON_RECONSTRUCTION  # noqa: E402
from models import baselines  # noqa: E402
from shared.preprocess import load_rgb, resize_center_crop  # noqa: E402
from shared.runtime import SpicCodec  # noqa: E402

CODEC_STYLE = {  # colour and marker per codec; line style per classifier
    "spic-rans": ("SPIC (rANS)", "C0", "o"),
    "spic-huffman": ("SPIC (Huffman)", "C5", "s"),
    "jpeg": ("JPEG", "C1", "^"),
    "webp": ("WebP", "C2", "v"),
    "avif": ("AVIF", "C3", "D"),
    "jpeg-half": ("JPEG at half size", "C4", "<"),
    "webp-half": ("WebP at half size", "C6", ">"),
    "avif-half": ("AVIF at half size", "C8", "P"),
}
LINESTYLES = ("-", "--", ":", "-.")


def save_line_plot(fig: Any, path: Path, dpi: int = 120) -> None:
    """A line plot as a 128-colour PNG: a quarter of matplotlib's RGBA file, the same to the eye,
    so a report committed with the code keeps the tree small (issue 33)."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    rgb = Image.open(buf).convert("RGB")
    rgb.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def classifier_styles(rows: list[dict]) -> dict[str, dict[str, Any]]:
    """One line style per pixel classifier, the same whichever codec's pixels it reads (SPIC's
    reconstructions included), and a heavy line for SPIC-Q, the curve the plot is about."""
    readers = sorted({r["classifier"].removesuffix(ON_RECONSTRUCTION) for r in rows} - {"SPIC-Q"})
    styles: dict[str, dict[str, Any]] = {
        name: {"ls": LINESTYLES[i % len(LINESTYLES)]} for i, name in enumerate(readers)
    }
    styles["SPIC-Q"] = {"ls": "-", "lw": 2.8, "zorder": 5}
    return styles


def _series(rows: list[dict], codec: str, key: str, classifier: str | None = None):
    pts = sorted(
        (r["bpp"], r[key])
        for r in rows
        if r["codec"] == codec
        and (classifier is None or r["classifier"] == classifier)
        and r["bpp"] is not None
        and r[key] is not None
        and not r["setting"].startswith("matched")
    )
    return [p[0] for p in pts], [p[1] for p in pts]


def rate_plots(result: dict, out: Path, every: bool = False) -> None:
    """The first metric's plot against bpp (top-1 where labelled), or all of them with ``every``:
    the committed reports keep one plot, the rest is a rerun away."""
    metrics = [("psnr", "PSNR (dB)"), ("ssim", "SSIM")]
    if result["labelled"]:
        metrics.insert(0, ("top1", "top-1 accuracy"))
    if not every:
        metrics = metrics[:1]
    rows = result["rows"]
    styles = classifier_styles(rows)
    for key, label in metrics:
        fig, ax = plt.subplots(figsize=(11, 5.5) if key == "top1" else (6, 4))
        for codec, (name, colour, marker) in CODEC_STYLE.items():
            if key != "top1":
                first = next((r["classifier"] for r in rows if r["codec"] == codec), None)
                x, y = _series(rows, codec, key, first)
                if x:
                    ax.plot(x, y, marker=marker, color=colour, label=name)
                continue
            names = sorted({r["classifier"] for r in rows if r["codec"] == codec})
            for clf in names:
                x, y = _series(rows, codec, key, clf)
                if x:
                    style = styles[clf.removesuffix(ON_RECONSTRUCTION)]
                    ax.plot(x, y, marker=marker, color=colour, label=f"{name} + {clf}", **style)
        if key == "top1":
            unc = [r["top1"] for r in rows if r["setting"] == "unquantized"]
            if unc:
                ax.axhline(unc[0], color="gray", ls=":", label="SPIC, latent unquantized")
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (whole file / frame, 224² crop)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if key == "top1":  # many series: the legend goes beside the axes, not over the data
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        else:
            ax.legend(fontsize=8)
        fig.tight_layout()
        save_line_plot(fig, out / f"{key}_vs_bpp.png")
        plt.close(fig)


def crop_grid(bundle: Path, paths: list[Path], size: int, result: dict, path: Path) -> None:
    """The same crops: original, SPIC at each QF, and each codec at the quality matched to a QF."""
    runtime = SpicCodec(bundle)
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
        crop = np.asarray(resize_center_crop(im, size, size))
        tiles = [crop]
        for q in qfs:
            _, symbols = runtime.codebook.decode(encoders[q].encode(im))
            tiles.append(runtime.reconstruct(runtime.latents([symbols], [q]), q)[0])
        tiles += [baselines.round_trip(c, crop, q)[1] for c, q in codec_q.items()]
        for j, tile in enumerate(tiles):
            axes[i][j].imshow(tile)
            axes[i][j].axis("off")
            if i == 0:
                axes[i][j].set_title(cols[j], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
