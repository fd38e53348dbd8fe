"""spic-eval end to end on generated images: rows, matched baselines, report and plots."""

from __future__ import annotations

import json

from evaluation.cli import main


def test_eval_writes_results_report_and_plots(tiny_bundle, tiny_data, tmp_path):
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
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["labelled"] and result["bundle_id"]
    rows = result["rows"]
    assert {"codec", "setting", "classifier", "bpp", "top1", "psnr", "ssim", "n_images"} <= rows[
        0
    ].keys()
    for codec in ("jpeg", "webp", "avif"):
        assert sum(r["setting"].startswith("matched-") for r in rows if r["codec"] == codec) == 3
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
