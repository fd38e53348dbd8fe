"""spic-eval end to end on generated images: rows, matched baselines, report and plots."""

from __future__ import annotations

import json

from evaluation.cli import main


def test_eval_writes_results_report_and_plots(
    tiny_bundle, tiny_data, tiny_reference, tiny_reference_ft, tmp_path
):
    references = [str(tiny_reference / "bundle"), str(tiny_reference_ft / "bundle")]
    assert (
        main(
            [
                "--bundle",
                str(tiny_bundle),
                "--data",
                str(tiny_data / "val"),
                "--out",
                str(tmp_path),
                "--limit",
                "8",
                "--reference",
                *references,
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["labelled"] and result["bundle_id"]
    labels = [r["label"] for r in result["references"]]
    assert result["classifiers"] == ["SPIC-U", *labels] and labels[1].endswith("FT")
    rows = result["rows"]
    assert {"codec", "setting", "classifier", "bpp", "top1", "psnr", "ssim", "n_images"} <= rows[
        0
    ].keys()
    for codec in ("jpeg", "webp", "avif"):
        for clf in result["classifiers"]:
            matched = [
                r
                for r in rows
                if r["codec"] == codec
                and r["classifier"] == clf
                and r["setting"].startswith("matched-")
            ]
            assert len(matched) == 3 and all(0 <= r["top1"] <= 1 for r in matched)
    # The references also classify SPIC's reconstructions, at SPIC's own rate.
    for label in labels:
        recon = [r for r in rows if r["classifier"] == f"{label} on reconstruction"]
        assert len(recon) == 3 and all(r["codec"] == "spic-rans" for r in recon)
    report = (tmp_path / "report.md").read_text()
    assert "reconstructions classified in pixels" in report and labels[1] in report
    assert all(r["n_images"] == 8 for r in rows)
    # What a committed report keeps: its JSON, its markdown and one plot; the rest is a rerun away.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "report.md",
        "results.json",
        "top1_vs_bpp.png",
    ]
    assert "`--all-plots`" in (tmp_path / "report.md").read_text()
    assert "spic-eval --bundle" in (tmp_path / "report.md").read_text()


def test_unlabelled_folder_gives_rate_and_quality_only(tiny_bundle, tiny_data, tmp_path):
    folder = tiny_data / "val" / "n01440764"
    assert (
        main(
            [
                "--bundle",
                str(tiny_bundle),
                "--data",
                str(folder),
                "--out",
                str(tmp_path),
                "--codecs",
                "jpeg",
                "--no-ladder",
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "results.json").read_text())
    assert not result["labelled"] and all(r["top1"] is None for r in result["rows"])
    assert not (tmp_path / "top1_vs_bpp.png").exists()


def test_half_size_codecs_decode_to_the_crop_size_below_the_full_size_rate():
    import numpy as np
    from skimage import data

    from models import baselines

    crop = np.ascontiguousarray(data.astronaut()[100:324, 100:324])
    for codec in ("jpeg", "webp", "avif"):
        lowest = baselines.CODECS[codec][1]
        full, full_image = baselines.round_trip(codec, crop, lowest)
        half, half_image = baselines.round_trip(f"{codec}-half", crop, lowest)
        assert full_image.shape == half_image.shape == crop.shape
        assert len(half) < len(full)
        target = 8 * len(half) / (224 * 224)
        q = baselines.match_quality(f"{codec}-half", [crop], target)
        assert q == lowest


def test_the_per_point_verdict_counts_every_codec_point_within_the_budget():
    from evaluation.report import point_verdicts

    def row(codec, setting, classifier, bpp, top1, hits=None):
        return dict(
            codec=codec, setting=setting, classifier=classifier, bpp=bpp, top1=top1, hits=hits
        )

    spic = [
        row("spic-rans", "QF2", "SPIC-Q", 0.04, 0.70),  # nothing that cheap: a win by default
        row("spic-rans", "QF16", "SPIC-Q", 0.20, 0.80, hits="1" * 30 + "0" * 10),
        row("spic-rans", "QF48", "SPIC-Q", 0.28, 0.82),
        row("spic-rans", "QF255", "SPIC-Q", 0.60, 0.83),  # above 0.3 bpp: not judged
    ]
    codec_rows = [
        # within 1.1 x 0.20: SPIC wins; of the same 40 images, 12 SPIC gets right and it wrong
        row("avif-half", "q0", "resnet18-half-ft", 0.21, 0.79, hits="0" * 12 + "1" * 18 + "1" * 10),
        row("webp", "q0", "SPIC-U", 0.23, 0.95),  # 1.15 x 0.20: outside QF16's budget
        row("jpeg", "matched-QF48:q1", "resnet18-half", 0.30, 0.83),  # beats QF48 within 1.1x
    ]
    lines = point_verdicts(spic + codec_rows, spic)
    table = [line for line in lines if line.startswith("| QF")]
    assert [line.split("|")[6].strip() for line in table] == [
        "**SPIC wins**",
        "**SPIC wins**",
        "codec wins",
    ]
    assert "none: no codec point is that cheap" in table[0]
    assert "AVIF-HALF q0 + resnet18-half-ft" in table[1]
    # 12 gained, 10 lost: exact two-sided binomial p of 12 of 22 at 1/2 is 0.83
    assert "12 gained, 10 lost, p = 0.83" in table[1]
    assert "—" in table[2]  # rows without per-image outcomes are not paired
    assert (
        "SPIC-Q wins 2 of 3 points up to 0.3 bpp (1 with no codec point that cheap, "
        "0 by McNemar p < 0.05)." in lines
    )


def test_a_labelled_run_without_the_ladder_still_writes_its_report(
    tiny_bundle, tiny_data, tmp_path
):
    args = ["--bundle", str(tiny_bundle), "--data", str(tiny_data / "val"), "--out", str(tmp_path)]
    assert main([*args, "--limit", "4", "--codecs", "jpeg", "--no-ladder", "--qf", "16"]) == 0
    assert "no ladder was run (--no-ladder)" in (tmp_path / "report.md").read_text()


def test_all_plots_draws_psnr_ssim_and_the_crops_too(tiny_bundle, tiny_data, tmp_path):
    args = ["--bundle", str(tiny_bundle), "--data", str(tiny_data / "val"), "--out", str(tmp_path)]
    assert main([*args, "--limit", "4", "--codecs", "jpeg", "--no-ladder", "--all-plots"]) == 0
    for name in ("top1_vs_bpp.png", "psnr_vs_bpp.png", "ssim_vs_bpp.png", "crops.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_a_reader_keeps_its_line_style_on_every_codec_and_spic_q_stands_out():
    from evaluation.plots import classifier_styles
    from evaluation.spic_eval import ON_RECONSTRUCTION

    readers = ["SPIC-U", "ResNet18-half", "ResNet18-half EMA", "ResNet18-half FT"]
    rows = [{"classifier": "SPIC-Q"}] + [
        {"classifier": name + suffix} for name in readers for suffix in ("", ON_RECONSTRUCTION)
    ]
    styles = classifier_styles(rows)
    assert set(styles) == {"SPIC-Q", *readers}  # a reader of SPIC's pixels is the same reader
    assert len({styles[r]["ls"] for r in readers}) == len(readers)
    assert styles["SPIC-Q"]["lw"] > 2 and all("lw" not in styles[r] for r in readers)
