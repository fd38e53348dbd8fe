"""The enhancement layer: its transform, the manifest's rules, and a layered bundle end to end
(exported, encoded at the edge, served by a real uvicorn)."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from cloud_service.harness import running_cloud
from edge_client.encoder import EdgeEncoder
from models.enhancement import KLTEnhancement, fit_klt
from models.int8 import make_int8
from shared.manifest import Manifest, load_manifest
from shared.preprocess import batch_input, to_uint8_image
from shared.quantize import dequantize
from shared.runtime import SpicCodec

OCTET = {"Content-Type": "application/octet-stream"}


def _images(n: int = 12, side: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 256, (n, side // 4, side // 4, 3)).repeat(4, 1).repeat(4, 2)
    return np.clip(smooth + rng.integers(-20, 21, smooth.shape), 0, 255).astype(np.uint8)


def _val_photo(tiny_data, i: int = 0) -> Image.Image:
    """A generated val image at the bundle's 64² crop: the kind of picture its layer was fitted on."""
    path = sorted((tiny_data / "val").glob("*/*.JPEG"))[i]
    im = Image.open(path).convert("RGB")
    left, top = (im.width - 64) // 2, (im.height - 64) // 2
    return im.crop((left, top, left + 64, top + 64))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def test_every_component_gives_the_block_back_and_fewer_give_less():
    images = _images()
    x = torch.from_numpy(batch_input(images))
    scores = []
    for m in (4, 16, 48):  # 48 = 3·4·4: the whole block
        layer = KLTEnhancement(*fit_klt(images, m, 4, coverage=100))
        with torch.no_grad():
            y = layer.encode(x)
            back = layer.decode(y)
        assert y.shape == (12, m, 8, 8) and float(y.min()) >= 0 and float(y.max()) <= 1
        scores.append(_psnr(images, to_uint8_image(back.numpy())))
    assert scores[0] < scores[1] < scores[2] and scores[2] > 50  # 48 components: exact
    with pytest.raises(ValueError, match="components"):
        fit_klt(images, 49, 4)


def test_the_fit_is_deterministic():
    a, b = fit_klt(_images(), 8, 4), fit_klt(_images(), 8, 4)
    np.testing.assert_array_equal(a[0], b[0])


def test_the_manifest_refuses_an_enhancement_that_does_not_fit(tiny_bundle):
    base = load_manifest(tiny_bundle)
    doc = base.model_dump()
    layer = dict(channels=1, from_qf=48, encoder="encoder", decoder="decoder")
    tables = {q: t + [[1] * (int(q) + 1)] if int(q) >= 48 else t for q, t in doc["tables"].items()}
    Manifest.model_validate({**doc, "enhancement": layer, "tables": tables})  # fits
    for bad, why in (
        ({**doc, "enhancement": layer}, "table for QF 48 must be"),  # no rows for the layer
        ({**doc, "enhancement": {**layer, "from_qf": 17}, "tables": tables}, "not among qfs"),
        (
            {**doc, "enhancement": {**layer, "decoder": "x"}, "tables": tables},
            "not among the files",
        ),
    ):
        with pytest.raises(ValueError, match=why):
            Manifest.model_validate(bad)


def _export_layered(tiny_run, tiny_data, out, *extra: str):
    from models.export import main

    args = [str(tiny_run / "checkpoint.pt"), "--out", str(out), "--data", str(tiny_data / "train")]
    args += ["--size", "64", "--enhance-channels", "24", "--enhance-from-qf", "48", *extra]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def layered_bundle(tiny_run, tiny_data, tmp_path_factory):
    return _export_layered(tiny_run, tiny_data, tmp_path_factory.mktemp("layered") / "layered")


def test_a_layered_bundle_classifies_as_the_plain_one_and_reconstructs_better_from_its_qf(
    layered_bundle, tiny_bundle, tiny_data
):
    manifest = load_manifest(layered_bundle)
    plain = load_manifest(tiny_bundle)
    assert manifest.enhancement is not None and manifest.latent == plain.latent
    assert [manifest.channels_at(q) - plain.latent.channels for q in manifest.qfs] == [0, 24, 24]
    layered, base = SpicCodec(layered_bundle), SpicCodec(tiny_bundle)
    photo = _val_photo(tiny_data, 0)
    crop = np.asarray(photo)
    for qf in manifest.qfs:
        frame = EdgeEncoder(layered_bundle, qf=qf, cache_dir=False).encode(photo)
        plain_frame = EdgeEncoder(tiny_bundle, qf=qf, cache_dir=False).encode(photo)
        _, symbols = layered.codebook.decode(frame)
        _, plain_symbols = base.codebook.decode(plain_frame)
        # The base channels are the plain bundle's, symbol for symbol, and so is the answer.
        assert len(symbols) == manifest.channels_at(qf)
        np.testing.assert_array_equal(symbols[: plain.latent.channels], plain_symbols)
        y_hat = dequantize(symbols, qf)[None]
        np.testing.assert_allclose(
            layered.classify_latents(y_hat),
            base.classify_latents(dequantize(plain_symbols, qf)[None]),
            atol=1e-5,
        )
        ours = _psnr(crop, layered.reconstruct(y_hat, qf)[0])
        theirs = _psnr(crop, base.reconstruct(dequantize(plain_symbols, qf)[None], qf)[0])
        if qf < 48:
            assert frame == plain_frame[:8] + frame[8:16] + plain_frame[16:-4] + frame[-4:]
            assert ours == pytest.approx(theirs)  # below the layer's QF: the base's own frame
        else:
            assert len(frame) > len(plain_frame) + 20
            assert ours > theirs + 3


def test_the_int8_encoder_leaves_the_layer_in_float(layered_bundle, tiny_data, tmp_path):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(layered_bundle, bundle)
    make_int8(bundle, str(tiny_data / "train"), 8, 64)
    photo = _val_photo(tiny_data, 1)
    frames = [EdgeEncoder(bundle, qf=128, int8=i, cache_dir=False).encode(photo) for i in (0, 1)]
    runtime = SpicCodec(bundle)
    layers = [runtime.codebook.decode(f)[1][runtime.manifest.latent.channels :] for f in frames]
    np.testing.assert_array_equal(*layers)


def test_the_cloud_reconstructs_an_enhanced_frame_over_http(layered_bundle, tiny_data):
    photo = _val_photo(tiny_data, 9)
    crop = np.asarray(photo)
    frames = {
        q: EdgeEncoder(layered_bundle, qf=q, cache_dir=False).encode(photo) for q in (16, 128)
    }
    with running_cloud([layered_bundle]) as url:
        info = httpx.get(url + "/v1/models").json()["models"][0]
        assert info["enhancement"] == {"channels": 24, "from_qf": 48}
        scores = {}
        for q, frame in frames.items():
            resp = httpx.post(url + "/v1/reconstruct", content=frame, headers=OCTET)
            assert resp.status_code == 200, resp.text
            scores[q] = _psnr(crop, np.asarray(Image.open(io.BytesIO(resp.content))))
            label = httpx.post(url + "/v1/classify", content=frame, headers=OCTET).json()["label"]
            assert label in ("tench", "English springer")
    assert scores[128] > scores[16] + 3


def test_a_base_qf_sends_the_base_as_at_that_qf_and_saves_its_bits(
    layered_bundle, tiny_bundle, tiny_run, tiny_data, tmp_path
):
    capped = _export_layered(tiny_run, tiny_data, tmp_path / "capped", "--enhance-base-qf", "16")
    manifest = load_manifest(capped)
    assert manifest.enhancement is not None and manifest.enhancement.base_qf == 16
    photo = _val_photo(tiny_data, 2)
    ours, full, plain = (SpicCodec(b) for b in (capped, layered_bundle, tiny_bundle))
    base = manifest.latent.channels
    frame = EdgeEncoder(capped, qf=128, cache_dir=False).encode(photo)
    uncapped = EdgeEncoder(layered_bundle, qf=128, cache_dir=False).encode(photo)
    at16 = EdgeEncoder(tiny_bundle, qf=16, cache_dir=False).encode(photo)
    symbols = ours.codebook.decode(frame)[1]
    # The base is QF 16's, symbol for symbol; the layer is QF 128's, as without the cap.
    np.testing.assert_array_equal(symbols[:base], plain.codebook.decode(at16)[1])
    np.testing.assert_array_equal(symbols[base:], full.codebook.decode(uncapped)[1][base:])
    assert len(frame) < len(uncapped)
    y_hat = ours.latents([symbols], [128])
    np.testing.assert_allclose(
        ours.classify_latents(y_hat), plain.classify_latents(plain.latents([symbols[:base]], [16]))
    )
    with pytest.raises(ValueError, match="base_qf 17 is not among"):
        layer = {**manifest.enhancement.model_dump(), "base_qf": 17}
        Manifest.model_validate({**manifest.model_dump(), "enhancement": layer})
