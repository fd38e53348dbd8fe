"""The Markdown report of spic-eval: paper-layout tables per codec, the rate each codec needs to
reach SPIC, and a verdict computed from the rows."""

from __future__ import annotations

from evaluation.pairs import paired
from evaluation.spic_eval import ON_RECONSTRUCTION
from models import baselines


def classifiers_of(result: dict) -> list[str]:
    """The pixel-domain classifiers of a result (results from before references: SPIC-U only)."""
    return result.get("classifiers") or ["SPIC-U"]


def _table_section(title: str, columns: list[str], intro: str = "") -> list[str]:
    """A report section's heading, optional intro paragraph, and table header."""
    lines = [f"## {title}", ""] + ([intro, ""] if intro else [])
    return [*lines, _table_row(columns), "|" + "---|" * len(columns)]


def _table_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


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
    columns = ["rate point", "SPIC bpp", "SPIC PSNR / SSIM"]
    columns += [f"{c.upper()} bpp, PSNR / SSIM" for c in codecs]
    lines += _table_section("Reconstruction quality at matched rates", columns)
    for r in spic:
        cells = []
        for c in codecs:
            m = _matched(matched, c, r, classifiers[0])
            cells.append(f"{_fmt(m['bpp'])}, {m['psnr']:.2f} / {m['ssim']:.3f}")
        quality = f"{r['psnr']:.2f} / {r['ssim']:.3f}"
        lines.append(_table_row([r["setting"], _fmt(r["bpp"]), quality, *cells]))
    lines += [
        "",
        "PSNR and SSIM are means over images of the per-image value, against the "
        f"{result['size']}² crop the encoder saw.",
        "",
        *verdict(rows, spic, matched, codecs, classifiers, result["labelled"]),
    ]
    if result["labelled"]:
        lines += ["", *point_verdicts(rows, spic)]
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
        f"Plot: `{'top1' if result['labelled'] else 'psnr'}_vs_bpp.png`. The command above with "
        "`--all-plots` also draws PSNR and SSIM against bpp and the same crops by each codec "
        "(`crops.png`).",
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
    out = _table_section(
        "SPIC's reconstructions classified in pixels",
        ["rate point", "bpp", "SPIC-Q (on the latent)", *(f"{k}{ON_RECONSTRUCTION}" for k in refs)],
        "The route SPIC-Q makes unnecessary: decode the latent to an image, then classify it.",
    )
    for r in spic:
        cells = []
        for k in refs:
            m = next(
                (
                    x
                    for x in rows
                    if x["codec"] == r["codec"]
                    and x["setting"] == r["setting"]
                    and x["classifier"] == f"{k}{ON_RECONSTRUCTION}"
                ),
                None,
            )
            cells.append(_fmt(m["top1"], True) if m else "n/a")
        out.append(_table_row([r["setting"], _fmt(r["bpp"]), _fmt(r["top1"], True), *cells]))
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
                    default=None,
                )
                cells.append(
                    "no ladder was run (--no-ladder)"
                    if best is None
                    else f"never on the ladder (best {_fmt(best['top1'], True)} at {best['setting']})"
                )
        out.append(f"| {c.upper()} | " + " | ".join(cells) + " |")
    return [*out, ""]


MATCHED_WITHIN = 1.25  # a baseline within 25% of SPIC's bits counts as "at the same rate"
# The per-point rule: at each SPIC point up to MAX_POINT_BPP, SPIC-Q must beat every codec point
# (any codec, full or half size, any setting, any pixel classifier) that spends at most
# BUDGET_RATIO x SPIC's bits.
BUDGET_RATIO = 1.1
MAX_POINT_BPP = 0.3


def point_verdicts(rows: list[dict], spic: list[dict]) -> list[str]:
    """Per SPIC point: the best codec point within BUDGET_RATIO x its bits, and who wins."""
    out = [
        f"## Per-point verdict: SPIC-Q against every codec point within {BUDGET_RATIO}x its bits",
        "",
        f"Each SPIC point up to {MAX_POINT_BPP} bpp faces every JPEG, WebP and AVIF point (full and "
        f"half size, every quality setting, read by every pixel classifier) that spends at most "
        f"{BUDGET_RATIO}x its bits. SPIC-Q wins a point when its top-1 is higher than all of them. "
        "The same images read both ways: the images SPIC-Q gets right and the best codec point "
        'wrong (gained), the reverse (lost), and McNemar\'s exact p for "no difference" '
        "(`evaluation/paired.py`); a win at a large p is within what these images can resolve.",
        "",
        "| SPIC point | bpp | SPIC-Q top-1 | best codec point within budget | image by image | verdict |",
        "|---|---|---|---|---|---|",
    ]
    wins = points = clear = unrivalled = 0
    for r in sorted(spic, key=lambda x: x["bpp"]):
        if r["bpp"] > MAX_POINT_BPP or r["top1"] is None:
            continue
        points += 1
        rivals = [
            x
            for x in rows
            if x["codec"] in baselines.CODECS
            and x["top1"] is not None
            and x["bpp"] <= BUDGET_RATIO * r["bpp"]
        ]
        best = max(rivals, key=lambda x: x["top1"], default=None)
        won = best is None or r["top1"] > best["top1"]
        wins += won
        unrivalled += best is None
        versus = "—"
        if best is not None and r.get("hits") and best.get("hits"):
            d = paired(best["hits"], r["hits"])
            versus = f"{d.gained} gained, {d.lost} lost, p = {d.p_value:.2g}"
            clear += won and d.p_value < 0.05
        rival = (
            "none: no codec point is that cheap"
            if best is None
            else f"{best['codec'].upper()} {best['setting']} + {best['classifier']}, "
            f"{best['bpp']:.4f} bpp, {_fmt(best['top1'], True)}"
        )
        out.append(
            _table_row(
                [
                    r["setting"],
                    _fmt(r["bpp"]),
                    _fmt(r["top1"], True),
                    rival,
                    versus,
                    "**SPIC wins**" if won else "codec wins",
                ]
            )
        )
    out += [
        "",
        f"SPIC-Q wins {wins} of {points} points up to {MAX_POINT_BPP} bpp "
        f"({unrivalled} with no codec point that cheap, {clear} by McNemar p < 0.05).",
        "",
    ]
    return out


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
