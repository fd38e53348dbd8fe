"""The target-rate knob: `--bpp` / `target_bpp` picks the QF from the rates measured on the bundle
(``manifest.measured``, written by spic-card), and the frame and the output say which QF ran."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from edge_client.encoder import EdgeEncoder
from edge_client.errors import BundleError
from shared import bitstream
from shared.bundles import DEFAULT_BUNDLE
from shared.manifest import load_manifest
from shared.measurements import Measurements, OperatingPoint

MANIFEST = load_manifest(DEFAULT_BUNDLE)


def with_points(*points: tuple[int, str, str, float]):
    measured = Measurements(
        dataset="d",
        n_images=1,
        command="spic-card ...",
        points=[OperatingPoint(qf=q, codec=c, encoder=e, bpp=b) for q, c, e, b in points],
    )
    return MANIFEST.model_copy(update={"measured": measured})


def test_the_highest_rate_within_the_budget_wins():
    m = with_points(
        (16, "rans", "fp32", 0.08), (48, "rans", "fp32", 0.09), (128, "rans", "fp32", 0.12)
    )
    assert [m.qf_for_bpp(t) for t in (0.085, 0.09, 0.119, 0.5)] == [16, 48, 48, 128]
    assert m.qf_for_bpp(0.01) == 16  # below every point: the lowest rate there is


def test_codec_and_encoder_are_matched_and_missing_rates_say_so():
    m = with_points(
        (16, "rans", "fp32", 0.08), (128, "huffman", "fp32", 0.1), (48, "rans", "int8", 0.07)
    )
    assert m.qf_for_bpp(0.2, "huffman") == 128 and m.qf_for_bpp(0.2, "rans", int8=True) == 48
    with pytest.raises(ValueError, match="no measured rates for huffman with the int8"):
        m.qf_for_bpp(0.2, "huffman", int8=True)
    with pytest.raises(ValueError, match="run spic-card"):
        MANIFEST.model_copy(update={"measured": None}).qf_for_bpp(0.1)


def test_measurements_are_outside_the_model_id():
    assert with_points((16, "rans", "fp32", 0.3)).content_hash() == MANIFEST.model_id


def test_the_shipped_bundle_carries_its_measured_rates_and_the_encoder_uses_them():
    assert MANIFEST.measured is not None and MANIFEST.measured.n_images == 1978
    rates = {
        p.qf: p.bpp for p in MANIFEST.measured.points if p.codec == "rans" and p.encoder == "fp32"
    }
    budget = (rates[16] + rates[48]) / 2  # between QF16's measured rate and QF48's
    encoder = EdgeEncoder(DEFAULT_BUNDLE, target_bpp=budget, cache_dir=False)
    assert encoder.qf == 16
    image = Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    )
    assert bitstream.unpack(encoder.encode(image)).qf == 16  # the frame says which QF ran
    assert EdgeEncoder(DEFAULT_BUNDLE, target_bpp=1.0, cache_dir=False).qf == max(rates)
    with pytest.raises(BundleError, match="not both"):
        EdgeEncoder(DEFAULT_BUNDLE, qf=16, target_bpp=0.1, cache_dir=False)


def test_spic_edge_encode_with_bpp_reports_the_qf(tmp_path):
    photo = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(
        photo
    )
    out = subprocess.run(
        [sys.executable, "-m", "edge_client.cli", "encode", str(photo), "--bpp", "10", "--json"]
        + ["--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "measured to fit 10.0 bpp" in out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["qf"] == max(MANIFEST.qfs)
