"""The shipped bundle's rate ladder (issue 11), on real photos: turning the QF up costs more bytes
and gives a better reconstruction, and the manifest lists every QF with its rate and top-1."""

from __future__ import annotations

from evaluation.ladder import MIN_STEP, measure_ladder, rising
from evaluation.samples import sample_images
from shared.bundles import DEFAULT_BUNDLE
from shared.manifest import load_manifest


def test_a_higher_qf_of_the_shipped_bundle_gives_more_bytes_and_a_higher_psnr():
    points = measure_ladder(DEFAULT_BUNDLE, sample_images())
    assert len(points) >= 6 and {16, 48, 128} <= {p["qf"] for p in points}
    assert rising(points, "mean_bytes"), points
    psnr = [p["psnr"] for p in points]
    assert all(b > a for a, b in zip(psnr, psnr[1:], strict=False)), points
    # Up to QF 16 each step buys a visible gain; above it the gains shrink to hundredths of a dB
    # (the open part of issue 11), so only "higher" is asked there.
    low = [p["psnr"] for p in points if p["qf"] <= 16]
    assert all(b - a >= MIN_STEP["psnr"] for a, b in zip(low, low[1:], strict=False)), points
    assert points[0]["bpp"] <= 0.05 and points[-1]["bpp"] >= 0.4, points


def test_the_manifest_lists_each_qf_with_its_measured_rate_and_top1():
    manifest = load_manifest(DEFAULT_BUNDLE)
    measured = manifest.measured
    assert measured is not None and measured.n_images == 1978
    for encoder in ("fp32", "int8"):
        rans = sorted(
            (p.qf, p.bpp, p.top1)
            for p in measured.points
            if p.codec == "rans" and p.encoder == encoder
        )
        assert [q for q, _, _ in rans] == sorted(manifest.qfs), encoder
        assert all(b is not None and t is not None for _, b, t in rans), encoder
        assert all(b1 < b2 for (_, b1, _), (_, b2, _) in zip(rans, rans[1:], strict=False)), encoder
