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
    for name in ("report.md", "top1_vs_bpp.png", "psnr_vs_bpp.png", "ssim_vs_bpp.png", "crops.png"):
        assert (tmp_path / name).stat().st_size > 0
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
