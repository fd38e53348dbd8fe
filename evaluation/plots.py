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


def classifiers_of(result: dict) -> list[str]:
    """The pixel-domain classifiers of a result (results from before references: SPIC-U only)."""
    return result.get("classifiers") or ["SPIC-U"]


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


def rate_plots(result: dict, out: Path) -> None:
    metrics = [("psnr", "PSNR (dB)"), ("ssim", "SSIM")]
    if result["labelled"]:
        metrics.insert(0, ("top1", "top-1 accuracy"))
    rows = result["rows"]
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
            for i, clf in enumerate(names):
                x, y = _series(rows, codec, key, clf)
                if x:
                    ls = LINESTYLES[i % len(LINESTYLES)]
                    ax.plot(x, y, ls, marker=marker, color=colour, label=f"{name} + {clf}")
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
        tiles += [baselines.round_trip(c, crop, q)[1] for c, q in codec_q.items()]
        for j, tile in enumerate(tiles):
            axes[i][j].imshow(tile)
            axes[i][j].axis("off")
            if i == 0:
                axes[i][j].set_title(cols[j], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _matched(matched: list[dict], codec: str, spic_row: dict, classifier: str = "SPIC-U") -> dict:
    """The baseline row of ``codec`` at the quality matched to a SPIC rate point."""
    return next(
        x
        for x in matched
        if x["codec"] == codec
        and x["classifier"] == classifier
        and x["setting"].startswith(f"matched-{spic_row['setting']}:")
    )


def _fmt(v, pct=False):
    if v is None:
        return "n/a"
    return f"{100 * v:.2f}%" if pct else f"{v:.4f}" if v < 10 else f"{v:.2f}"


def _quality(row: dict) -> str:
    return row["setting"].split(":")[1]


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
    spic = [r for r in rows if r["codec"] == "spic-rans" and r["classifier"] == "SPIC-Q"]
    matched = [r for r in rows if r["setting"].startswith("matched")]
    codecs = sorted({r["codec"] for r in matched})
    classifiers = classifiers_of(result)
    lines += _classifier_notes(result)
    if result["labelled"]:
        lines += _accuracy_tables(rows, spic, matched, codecs, classifiers)
        lines += _reconstruction_classified(rows, spic, classifiers)
        lines += _rate_to_match(rows, spic, codecs, classifiers)
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
            m = _matched(matched, c, r, classifiers[0])
            cells.append(f"{_fmt(m['bpp'])}, {m['psnr']:.2f} / {m['ssim']:.3f}")
        lines.append(
            f"| {r['setting']} | {_fmt(r['bpp'])} | {r['psnr']:.2f} / {r['ssim']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "PSNR and SSIM are means over images of the per-image value, against the "
        f"{result['size']}² crop the encoder saw.",
        "",
        *verdict(rows, spic, matched, codecs, classifiers, result["labelled"]),
    ]
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


def _classifier_notes(result: dict) -> list[str]:
    if not result["labelled"]:
        return []
    out = [
        "Classifiers of decoded pixels:",
        "",
        "- **SPIC-U**: the SPIC network itself, fed the decoded image, its latent left unquantized "
        "(the paper's JPEG + SPIC-U column).",
    ]
    for ref in result.get("references", []):
        ft = ref["finetune"]
        how = (
            "fine-tuned on train images decoded by "
            + ", ".join(f"{c.upper()} q{q}" for c, q in ft["qualities"].items())
            + f" (the qualities matched to {ft['target_bpp']:.4f} bpp, {ft['target_from']})"
            if ft
            else "trained from scratch on clean train images"
        )
        out.append(
            f"- **{ref['label']}**: reference bundle `{ref['model_id']}`, `{ref['architecture']}`, "
            f"{how}; stands in for the paper's ResNet50 / VGG19 columns."
        )
    return [*out, ""]


def _accuracy_tables(rows, spic, matched, codecs, classifiers) -> list[str]:
    unq = next((r for r in rows if r["setting"] == "unquantized"), None)
    clean = {r["classifier"]: r for r in rows if r["setting"] == "uncompressed"}
    out = ["## Top-1 at matched rates (the paper's table)", ""]
    for c in codecs:
        name = c.upper()
        out += [
            f"### {name}",
            "",
            f"| rate point | SPIC-Q bpp | SPIC-Q top-1 | {name} bpp (quality) | "
            + " | ".join(f"{name} + {k}" for k in classifiers)
            + " |",
            "|---|---|---|---|" + "---|" * len(classifiers),
        ]
        if unq and clean:
            out.append(
                f"| uncompressed | — | {_fmt(unq['top1'], True)} (latent unquantized) | — | "
                + " | ".join(
                    _fmt(clean[k]["top1"], True) if k in clean else "n/a" for k in classifiers
                )
                + " |"
            )
        for r in spic:
            ms = [_matched(matched, c, r, k) for k in classifiers]
            out.append(
                f"| {r['setting']} | {_fmt(r['bpp'])} | **{_fmt(r['top1'], True)}** | "
                f"{_fmt(ms[0]['bpp'])} ({_quality(ms[0])}) | "
                + " | ".join(_fmt(m["top1"], True) for m in ms)
                + " |"
            )
        out.append("")
    return out


def _reconstruction_classified(rows, spic, classifiers) -> list[str]:
    refs = [k for k in classifiers if k != "SPIC-U"]
    if not refs:
        return []
    out = [
        "## SPIC's reconstructions classified in pixels",
        "",
        "The route SPIC-Q makes unnecessary: decode the latent to an image, then classify it.",
        "",
        "| rate point | bpp | SPIC-Q (on the latent) | "
        + " | ".join(f"{k} on reconstruction" for k in refs)
        + " |",
        "|---|---|---|" + "---|" * len(refs),
    ]
    for r in spic:
        cells = []
        for k in refs:
            m = next(
                (
                    x
                    for x in rows
                    if x["codec"] == r["codec"]
                    and x["setting"] == r["setting"]
                    and x["classifier"] == f"{k} on reconstruction"
                ),
                None,
            )
            cells.append(_fmt(m["top1"], True) if m else "n/a")
        out.append(
            f"| {r['setting']} | {_fmt(r['bpp'])} | {_fmt(r['top1'], True)} | "
            + " | ".join(cells)
            + " |"
        )
    return [*out, ""]


def rate_to_reach(rows, codec: str, classifier: str, top1: float) -> dict | None:
    """The cheapest ladder row of ``codec`` + ``classifier`` whose top-1 is at least ``top1``."""
    ladder = sorted(
        (
            r
            for r in rows
            if r["codec"] == codec
            and r["classifier"] == classifier
            and not r["setting"].startswith("matched")
            and r["top1"] is not None
        ),
        key=lambda r: r["bpp"],
    )
    return next((r for r in ladder if r["top1"] >= top1), None)


def _rate_to_match(rows, spic, codecs, classifiers) -> list[str]:
    if not spic:
        return []
    target = min(spic, key=lambda r: r["bpp"])
    out = [
        f"## Rate each codec needs to reach SPIC-Q's top-1 at {target['setting']}",
        "",
        f"SPIC-Q: **{_fmt(target['top1'], True)} at {target['bpp']:.4f} bpp**. The cheapest point of "
        "each codec's quality ladder that does at least as well:",
        "",
        "| codec | " + " | ".join(classifiers) + " |",
        "|---|" + "---|" * len(classifiers),
    ]
    for c in codecs:
        cells = []
        for k in classifiers:
            hit = rate_to_reach(rows, c, k, target["top1"])
            if hit:
                cells.append(
                    f"{hit['setting']}: {hit['bpp']:.3f} bpp ({hit['bpp'] / target['bpp']:.1f}x), "
                    f"{_fmt(hit['top1'], True)}"
                )
            else:
                best = max(
                    (
                        r
                        for r in rows
                        if r["codec"] == c
                        and r["classifier"] == k
                        and r["top1"] is not None
                        and not r["setting"].startswith("matched")
                    ),
                    key=lambda r: r["top1"],
                )
                cells.append(
                    f"never on the ladder (best {_fmt(best['top1'], True)} at {best['setting']})"
                )
        out.append(f"| {c.upper()} | " + " | ".join(cells) + " |")
    return [*out, ""]


MATCHED_WITHIN = 1.25  # a baseline within 25% of SPIC's bits counts as "at the same rate"


def _reach(codec: str, m: dict, ratio: float) -> str:
    if ratio <= 1.05:
        return "matches its rate"
    lowest = baselines.CODECS.get(codec, (None, None))[1]
    if _quality(m) == f"q{lowest}":
        return f"cannot go that low: at its lowest setting ({_quality(m)}) it spends {ratio:.2f}x the bits"
    return f"comes closest at {_quality(m)}, which spends {ratio:.2f}x the bits"


def verdict(rows, spic, matched, codecs, classifiers, labelled: bool) -> list[str]:
    """Where SPIC wins and where it loses, computed from the rows, in plain words."""
    out = ["## Where SPIC wins and where it loses", ""]
    tally = {True: [0, 0, 0], False: [0, 0, 0]}  # at SPIC's rate? -> [wins, losses, comparisons]
    for r in spic:
        for c in codecs:
            ms = [_matched(matched, c, r, k) for k in classifiers]
            m = ms[0]
            ratio = m["bpp"] / r["bpp"]
            acc = ""
            if labelled:
                best = max(ms, key=lambda x: x["top1"])
                d = 100 * (r["top1"] - best["top1"])
                t = tally[ratio <= MATCHED_WITHIN]
                t[0], t[1], t[2] = t[0] + (d > 0), t[1] + (d < 0), t[2] + 1
                words = (
                    "the same as"
                    if abs(d) < 0.005
                    else f"{abs(d):.2f} points {'higher' if d > 0 else 'lower'} than"
                )
                acc = (
                    f"; SPIC-Q top-1 is {words} its best pixel classifier, {best['classifier']} "
                    f"({100 * r['top1']:.2f}% vs {100 * best['top1']:.2f}%)"
                )
            look = f"; reconstruction PSNR {r['psnr']:.2f} vs {m['psnr']:.2f} dB, SSIM {r['ssim']:.3f} vs {m['ssim']:.3f}"
            out.append(
                f"- {r['setting']} ({r['bpp']:.4f} bpp) against {c.upper()}: {c.upper()} "
                f"{_reach(c, m, ratio)}{acc}{look}."
            )
    worse_look = sum(
        r["psnr"] < _matched(matched, c, r, classifiers[0])["psnr"] for r in spic for c in codecs
    )
    pairs = len(spic) * len(codecs)
    out += [""]
    if labelled:
        (w_at, l_at, n_at), (w_above, l_above, n_above) = tally[True], tally[False]
        out.append(
            f"**Accuracy.** Against the best classifier of each codec's decoded images: where the "
            f"codec gets within {MATCHED_WITHIN:.2f}x of SPIC's bits, SPIC-Q wins {w_at} and loses "
            f"{l_at} of {n_at} comparisons; where the codec needs more bits than that, SPIC-Q wins "
            f"{w_above} and loses {l_above} of {n_above}."
        )
    out.append(
        f"**Reconstruction.** SPIC's reconstructions have the lower PSNR in {worse_look} of {pairs} "
        "comparisons: its decoder is trained for a latent that serves classification first, and "
        "it is not a competitive image codec."
    )
    return out
