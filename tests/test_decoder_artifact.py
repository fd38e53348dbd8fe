"""Decoders as artifacts (shared/decoders.py, spic-decoder): a decoder trained on a frozen codec's
latents serves that codec's frames at its QFs, the bundle's decoder the rest, and the codec id
does not move."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.decoder_net import DecoderConfig, LatentDecoder, load_shipped
from models.decoder_train import main
from shared.decoders import Decoder, load_decoder_manifest, write_decoder
from shared.onnx_session import make_session
from shared.runtime import SpicCodec


@pytest.fixture(scope="module")
def tiny_decoder(tiny_bundle, tiny_data, tmp_path_factory) -> tuple[Path, list[int]]:
    codec = SpicCodec(tiny_bundle)
    qfs = [q for q in codec.manifest.qfs if codec.manifest.decoder_role(q) == "decoder"][:2]
    tmp = tmp_path_factory.mktemp("decoder")
    out = tmp / "decoder"
    args = ["train", "--codec", str(tiny_bundle), "--data", str(tiny_data), "--out", str(out)]
    args += ["--cache", str(tmp / "cache"), "--qfs", ",".join(map(str, qfs)), "--name", "tiny"]
    args += ["--steps", "3", "--batch", "2", "--crop", "2", "--width", "8", "--blocks", "1"]
    args += ["--val-limit", "4", "--threads", "1", "--warmup", "1", "--log-every", "1"]
    args += ["--loss", "mse+perceptual"]
    assert main(args) == 0
    return out, qfs


def test_artifact_names_its_codec_and_qfs(tiny_decoder, tiny_bundle):
    folder, qfs = tiny_decoder
    m = load_decoder_manifest(folder)
    codec = SpicCodec(tiny_bundle)
    assert m.codec_id == codec.model_id and m.qfs == qfs and m.input == "base"
    assert m.decoder_id == m.content_hash() and len(m.decoder_id) == 16
    assert m.measured is not None and set(m.measured.per_qf) == {str(q) for q in qfs}
    assert m.measured.train_steps == 3 and "spic-decoder train" in m.measured.command
    graph = make_session(folder / "decoder.onnx", threads=1, cache_dir=False)
    assert [i.name for i in graph.get_inputs()] == ["latent"]


def test_codec_reconstructs_with_the_decoder_for_its_qfs_only(tiny_decoder, tiny_bundle):
    folder, qfs = tiny_decoder
    codec = SpicCodec(tiny_bundle)
    before = (codec.model_id, list(codec.ids))
    h, w = (s // codec.manifest.latent.stride for s in (64, 64))
    y = np.random.default_rng(0).random((2, codec.manifest.latent.channels, h, w), np.float32)
    other = next(q for q in codec.manifest.qfs if q not in qfs)
    shipped = {q: codec.reconstruct(y, q) for q in (qfs[0], other)}
    decoder = Decoder.open(folder)
    codec.add_decoder(decoder)
    assert (codec.model_id, list(codec.ids)) == before  # a decoder is no part of the codec id
    assert codec.decoder_for(qfs[0]) is decoder and codec.decoder_for(other) is None
    ours = codec.reconstruct(y, qfs[0])
    expected = np.moveaxis((np.clip(decoder.run(y), 0, 1) * 255 + 0.5).astype(np.uint8), 1, -1)
    np.testing.assert_array_equal(ours, expected)
    assert not np.array_equal(ours, shipped[qfs[0]])  # trained a few steps: not the shipped one
    np.testing.assert_array_equal(codec.reconstruct(y, other), shipped[other])


def test_a_decoder_of_another_codec_is_refused(tiny_decoder, tiny_bundle, tmp_path):
    folder, _ = tiny_decoder
    m = load_decoder_manifest(folder)
    (tmp_path / "decoder.onnx").write_bytes((folder / "decoder.onnx").read_bytes())
    write_decoder(tmp_path, m.model_copy(update={"codec_id": "0123456789abcdef"}))
    with pytest.raises(ValueError, match="reads codec 0123456789abcdef"):
        SpicCodec(tiny_bundle).add_decoder(Decoder.open(tmp_path))
    (tmp_path / "decoder.onnx").write_bytes(b"not the sealed graph")
    with pytest.raises(ValueError, match="does not match its hash"):
        Decoder.open(tmp_path)


def test_warm_start_is_the_shipped_decoder(tiny_bundle):
    """Before any step, the new decoder is the bundle's decoder.onnx: training only adds."""
    codec = SpicCodec(tiny_bundle)
    m = codec.manifest
    cfg = DecoderConfig(m.latent.channels, list(m.architecture_config["dec_channels"]), 8, 1)
    model = LatentDecoder(cfg)
    load_shipped(model, tiny_bundle / m.files["decoder"].path)
    y = np.random.default_rng(1).random((1, m.latent.channels, 4, 4), np.float32)
    with torch.no_grad():
        ours = model.eval()(torch.from_numpy(y)).numpy()
    theirs = codec.session("decoder").run(None, {"latent": y})[0]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_spic_cloud_serve_decoder_renders_the_frames_it_serves(tiny_decoder, tiny_bundle):
    """`spic-cloud serve --decoder DIR`: the cloud's reconstructions of that codec's frames at
    the decoder's QFs are the decoder's, the others the bundle's; /v1/models lists it."""
    import io

    import httpx
    from PIL import Image

    from cloud_service.harness import running_cloud
    from edge_client.encoder import EdgeEncoder

    folder, qfs = tiny_decoder
    codec = SpicCodec(tiny_bundle)
    other = next(
        q
        for q in codec.manifest.qfs
        if q not in qfs and codec.manifest.decoder_role(q) == "decoder"
    )
    photo = Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    frames = {
        q: EdgeEncoder(tiny_bundle, qf=q, cache_dir=False).encode(photo) for q in (qfs[0], other)
    }
    with_decoder = SpicCodec(tiny_bundle)
    with_decoder.add_decoder(Decoder.open(folder))
    octet = {"Content-Type": "application/octet-stream"}
    with running_cloud(
        [tiny_bundle], cli_args=("--only", "--bundle", str(tiny_bundle), "--decoder", str(folder))
    ) as url:
        listed = httpx.get(url + "/v1/models").json()["models"][0]["decoders"]
        assert any(d.startswith("tiny (QF ") for d in listed)
        for q, frame in frames.items():
            resp = httpx.post(url + "/v1/reconstruct", content=frame, headers=octet, timeout=30)
            assert resp.status_code == 200, resp.text
            got = np.asarray(Image.open(io.BytesIO(resp.content)))
            renderer = with_decoder if q == qfs[0] else codec
            np.testing.assert_array_equal(got, renderer.picture(renderer.parse(frame)))
    assert not np.array_equal(
        with_decoder.picture(with_decoder.parse(frames[qfs[0]])),
        codec.picture(codec.parse(frames[qfs[0]])),
    )
