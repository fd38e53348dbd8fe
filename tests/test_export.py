"""spic-export produces a self-consistent bundle that the edge and the cloud agree on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from edge_client.encoder import EdgeEncoder
from edge_client.errors import BundleError, ImageError
from evaluation.pairs import load_card
from models.config import TrainConfig
from models.export import main as export_main
from models.model_card import what_it_is
from shared.codebook import Codebook, ModelMismatchError
from shared.errors import BitstreamError
from shared.manifest import load_manifest


def test_bundle_files_and_manifest(tiny_bundle):
    assert {p.name for p in tiny_bundle.iterdir()} >= {
        "encoder.onnx",
        "decoder.onnx",
        "classifier.onnx",
        "manifest.json",
        "MODEL_CARD.md",
    }
    m = load_manifest(tiny_bundle)
    assert m.qfs == [16, 48, 128] and m.latent.stride == 16 and m.latent.channels == 4
    assert [c.name for c in m.classes] == ["tench", "English springer"]
    for qf in m.qfs:
        t = m.table(qf)
        assert t.shape == (4, qf + 1) and t.min() >= 1  # Laplace-smoothed counts
    assert "GFLOP" in (tiny_bundle / "MODEL_CARD.md").read_text()


def test_export_to_another_folder_and_name_keeps_the_codec_id(
    tiny_run, tiny_data, tiny_bundle, tmp_path
):
    export_main(
        [
            str(tiny_run / "checkpoint.pt"),
            "--out",
            str(tmp_path / "again"),
            "--name",
            "another-name",
            "--data",
            str(tiny_data / "train"),
            "--size",
            "64",
        ]
    )
    assert load_manifest(tmp_path / "again").model_id == load_manifest(tiny_bundle).model_id


def test_tampered_bundle_is_refused(tiny_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    with (copy / "classifier.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="does not match"):
        load_manifest(copy)
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    manifest["tables"]["16"][0][0] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(tiny_bundle / "classifier.onnx", copy / "classifier.onnx")
    with pytest.raises(ValueError, match="model id"):
        load_manifest(copy)
    with pytest.raises(BundleError):
        EdgeEncoder(copy)


@pytest.mark.parametrize("codec", ["rans", "huffman"])
@pytest.mark.parametrize("qf", [16, 128])
def test_edge_frame_decodes_to_the_encoders_symbols(tiny_bundle, tiny_data, codec, qf, tmp_path):
    encoder = EdgeEncoder(tiny_bundle, qf=qf, codec=codec, cache_dir=tmp_path)
    image = next((tiny_data / "val").rglob("*.JPEG"))
    result = encoder.encode_timed(image)
    frame, symbols = Codebook(load_manifest(tiny_bundle)).decode(result.data)
    np.testing.assert_array_equal(symbols, result.symbols)
    assert frame.qf == qf and frame.image_size == Image.open(image).size
    assert frame.input_size == (64, 64) and frame.bpp == pytest.approx(result.bpp)
    assert set(result.timings_ms) == {"preprocess", "encoder", "quantize", "entropy", "pack"}
    assert list(tmp_path.glob("encoder-*.onnx")), "the optimized graph is cached on disk"


def test_whole_image_mode_and_bad_images(tiny_bundle, tmp_path):
    enc = EdgeEncoder(tiny_bundle, whole_image=True, cache_dir=False)
    frame, _ = Codebook(enc.manifest).decode(enc.encode(Image.new("RGB", (96, 48), "gray")))
    assert frame.latent_shape == (4, 3, 6)
    padded, _ = Codebook(enc.manifest).decode(enc.encode(Image.new("RGB", (100, 48))))
    assert padded.latent_shape == (4, 3, 7) and padded.image_size == (100, 48)  # padded to 112
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match="bad.jpg"):
        EdgeEncoder(tiny_bundle, cache_dir=False).encode(bad)


def test_codebook_refuses_frames_of_other_models(tiny_bundle):
    enc = EdgeEncoder(tiny_bundle, cache_dir=False)
    data = bytearray(enc.encode(Image.new("RGB", (64, 64), "white")))
    other = load_manifest(tiny_bundle).model_copy(update={"model_id": "00112233445566ff"})
    with pytest.raises(ModelMismatchError) as err:
        Codebook(other).decode(bytes(data))
    assert enc.model_id in str(err.value) and "00112233445566ff" in str(err.value)
    data[-5] ^= 1
    with pytest.raises(BitstreamError):
        Codebook(load_manifest(tiny_bundle)).decode(bytes(data))


def test_card_records_the_split_it_read_from_a_dataset_root(tiny_bundle, tiny_data, tmp_path):
    """Given the dataset root, spic-card reads val/ and says so, as a card given val/ does: cards
    made either way compare image by image (python -m evaluation.paired)."""
    from evaluation.card import main as card_main

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    assert card_main(["--bundle", str(bundle), "--data", str(tiny_data), "--no-progress"]) == 0
    assert json.loads((bundle / "eval.json").read_text())["dataset"] == str(tiny_data / "val")


def test_card_measures_real_bytes_and_states_targets(tiny_bundle, tiny_data, tmp_path):
    from evaluation.card import main as card_main
    from models.int8 import main as int8_main

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    codec_id = load_manifest(bundle).model_id
    assert int8_main([str(bundle), "--data", str(tiny_data / "train"), "--images", "8"]) == 0
    before = load_manifest(bundle)  # sealed with its INT8 encoder
    assert before.model_id == codec_id, "an INT8 encoder makes the same codec's frames"
    args = ["--bundle", str(bundle), "--data", str(tiny_data / "val"), "--int8", "--no-progress"]
    assert card_main(args) == 0
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "spic-card --bundle" in card and "Not evaluated yet" not in card and "spic-int8" in card
    assert "uncompressed top-1 ≥ 85%" in card and "| 16 | huffman | FP32 |" in card
    assert "- a ladder of ≥ 6 QFs" in card and "the INT8 encoder loses" in card
    assert "| 16 | rans | INT8 |" in card and load_manifest(bundle).model_id in card
    rows = load_card(bundle / "eval.json")["rows"]
    assert {r["setting"] for r in rows} == {"unquantized", "QF16", "QF48", "QF128"}
    kept = json.loads((bundle / "eval.json").read_text())["rows"]  # packed: a quarter the bytes
    assert all("hits" not in r and len(r["hits_hex"]) == 4 for r in kept if "hits_hex" in r)
    # Every SPIC classifier row keeps its per-image outcomes, and top-1 is their mean.
    for r in rows:
        assert len(r["hits"]) == 16 and r["top1"] == r["hits"].count("1") / 16
    assert "| QF16 → QF48 |" in card and "McNemar" in card
    for r in rows:
        if r["setting"] != "unquantized":
            assert r["n_images"] == 16 and 0 < r["bpp"] < 1 and r["ssim"] is not None
    # The manifest now carries the measured operating points, and its model id did not change.
    after = load_manifest(bundle)
    assert after.model_id == before.model_id and after.measured is not None
    assert after.measured.command.startswith("spic-card --bundle")
    points = {(p.qf, p.codec, p.encoder): p for p in after.measured.points}
    assert set(points) == {(q, c, "fp32") for q in (16, 48, 128) for c in ("rans", "huffman")} | {
        (q, "rans", "int8") for q in (16, 48, 128)
    }
    rans16 = next(r for r in rows if r["setting"] == "QF16" and r["codec"] == "spic-rans")
    assert points[(16, "rans", "fp32")].bpp == rans16["bpp"]


def _row(setting: str, bpp: float, top1: float, psnr: float, ssim: float, int8=False) -> dict:
    classifier = "SPIC-Q INT8" if int8 else "SPIC-Q"
    return dict(setting=setting, codec="spic-rans", classifier=classifier, bpp=bpp, top1=top1,
                psnr=psnr, ssim=ssim)  # fmt: skip


def test_card_targets_are_computed_from_the_rows():
    from evaluation.card import target_lines

    unq = _row("unquantized", 0, 0.86, 0, 0)
    ladder = [
        _row(f"QF{q}", b, t, p, s)
        for q, b, t, p, s in [
            (2, 0.03, 0.80, 18, 0.5), (4, 0.06, 0.84, 20, 0.6), (8, 0.1, 0.845, 22, 0.7),
            (16, 0.2, 0.85, 24, 0.75), (48, 0.4, 0.857, 26, 0.8), (128, 0.65, 0.858, 27, 0.82),
        ]
    ]  # fmt: skip
    int8 = [_row(r["setting"], r["bpp"], r["top1"] - 0.004, 0, 0, int8=True) for r in ladder]
    lines = "\n".join(target_lines(ladder + int8, unq))
    assert "**missed**" not in lines, lines
    assert "(6 QFs, 0.0300 → 0.6500 bpp)" in lines and "QF8: 0.1000 bpp, +1.50 points" in lines
    # Each target fails on its own.
    short = "\n".join(target_lines(ladder[1:] + int8, unq))
    assert "ladder of ≥ 6 QFs from ≤ 0.04 to ≥ 0.6 bpp: **missed** (5 QFs" in short
    bad = [dict(r) for r in ladder]
    bad[-1].update(psnr=25.0, ssim=0.79)
    bad[2].update(top1=0.83)
    lines = "\n".join(target_lines(bad, unq))
    assert "- PSNR rises with rate: **missed** (falls at QF48 → QF128)" in lines
    assert "- top-1 rises with rate: **missed** (falls at QF4 → QF8)" in lines
    assert "PSNR ≥ 26.0 dB: **missed**" in lines and "≈ 0.1 bpp: **missed**" in lines
    worse = [dict(r, top1=r["top1"] - 0.006) for r in int8]
    assert "every QF: **missed**" in "\n".join(target_lines(ladder + worse, unq))
    assert "85%" in target_lines(ladder, _row("unquantized", 0, 0.83, 0, 0))[2]
    assert "below the floor" in target_lines(ladder, _row("unquantized", 0, 0.83, 0, 0))[2]


def test_the_card_names_each_teacher_the_training_used():
    train = TrainConfig(model="spic-rn18h-lite", teacher="models/bundles/t").to_dict()
    plain = what_it_is(train)
    assert "distilled from `models/bundles/t`" in plain and "features" not in plain
    with_features = what_it_is({**train, "feature_distill_weight": 1.0})
    assert "features where its first stage ends are pulled toward `models/bundles/t`" in " ".join(
        with_features.split()
    )
    assert "over the first 50% of the steps" in " ".join(with_features.split())


def test_the_card_says_a_fine_tune_and_its_qf_draw():
    train = TrainConfig(
        model="spic-rn18h-lite",
        init_checkpoint="runs/a/checkpoint.pt",
        qfs=(1, 16),
        qf_weights=(3.0, 1.0),
    ).to_dict()
    text = " ".join(what_it_is(train).split())
    assert "classifier cut in two" in text
    assert "fine-tuned the weights of the checkpoint `runs/a/checkpoint.pt`" in text
    assert "drawn per batch from [1, 16] with weights [3.0, 1.0]." in text
    assert "with weights" not in what_it_is(TrainConfig().to_dict())


def test_card_records_the_training_command_that_ran(tiny_bundle, tiny_data):
    card = (tiny_bundle / "MODEL_CARD.md").read_text()
    # the exact argv of the conftest's tiny run, not a command synthesized at export
    assert f"spic-train --data {tiny_data} --out " in card and "--set epochs=2" in card
    assert "spic-export " in card


def test_pinned_channels_are_constant_and_the_rest_untouched():
    import torch

    from models.export import pin_idle_channels
    from models.network import spic_tiny
    from shared.preprocess import batch_input

    torch.manual_seed(0)
    model = spic_tiny().eval()
    last = model.g_a.net[-2]
    with torch.no_grad():  # channel 2 made idle: a tiny jitter around sigmoid(0.3)
        last.weight[2] *= 1e-6
        last.bias[2] = 0.3
    images = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(batch_input(images))
    with torch.no_grad():
        before = model.g_a(x)
    assert pin_idle_channels(model, images, max_std=1e-4) == [2]
    with torch.no_grad():
        after = model.g_a(x)
    others = [0, 1, 3]
    torch.testing.assert_close(after[:, others], before[:, others], rtol=0, atol=0)
    assert after[:, 2].unique().numel() == 1
    assert after[:, 2].mean().item() == pytest.approx(before[:, 2].mean().item(), abs=1e-4)


def test_pinned_channels_cost_no_bits(tiny_run, tiny_data, tiny_bundle, tmp_path):
    out = tmp_path / "pinned"
    args = [str(tiny_run / "checkpoint.pt"), "--out", str(out), "--data", str(tiny_data / "train")]
    # A threshold above any std pins every channel: the frame is then the header and little else.
    assert export_main([*args, "--size", "64", "--pin-idle", "2"]) == 0
    assert (
        "pinned to a constant at export (`--pin-idle`): 4 [0, 1, 2, 3]"
        in (out / "MODEL_CARD.md").read_text()
    )
    image = next((tiny_data / "val").rglob("*.JPEG"))
    plain = EdgeEncoder(tiny_bundle, qf=128, cache_dir=False).encode_timed(image)
    pinned = EdgeEncoder(out, qf=128, cache_dir=False).encode_timed(image)
    assert len(np.unique(pinned.symbols)) <= 4  # one symbol per channel
    assert len(pinned.data) < len(plain.data)
    for row in load_manifest(out).table(128):  # one symbol seen, the rest only Laplace's +1
        assert (row == 1).sum() == len(row) - 1


def test_a_step_of_the_ladder_is_compared_image_by_image():
    from evaluation.card import step_lines, target_lines
    from evaluation.pairs import paired

    # 10 images lost and none gained: exact two-sided McNemar p = 2 / 2**10.
    d = paired("1" * 10 + "0" * 5, "0" * 15)
    assert (d.gained, d.lost, d.n) == (0, 10, 15) and abs(d.p_value - 2 / 1024) < 1e-12
    assert paired("10" * 5, "01" * 5).p_value == 1.0 and paired("1", "1").p_value == 1.0
    with pytest.raises(ValueError):
        paired("101", "10")
    # On rows: 3 gained and 4 lost out of 20 is a fall, named with its counts and p.
    a, b = "1" * 4 + "0" * 3 + "1" * 13, "0" * 4 + "1" * 3 + "1" * 13
    rows = [
        dict(_row("QF4", 0.08, a.count("1") / 20, 20, 0.5), hits=a),
        dict(_row("QF8", 0.14, b.count("1") / 20, 21, 0.6), hits=b),
    ]
    lines = "\n".join(target_lines(rows, _row("unquantized", 0, 0.9, 0, 0)))
    expected = f"falls at QF4 → QF8 by -5.00 points: 3 images gained, 4 lost, McNemar p = {paired(a, b).p_value:.2g}"
    assert expected in lines, lines
    assert "| QF4 → QF8 | 0.0800 → 0.1400 | -5.00 | 3 | 4 | 1 |" in step_lines(rows)
    # Rows without per-image outcomes (older eval.json files) keep the plain verdict.
    plain = [{k: v for k, v in r.items() if k != "hits"} for r in rows]
    assert "(falls at QF4 → QF8)" in "\n".join(
        target_lines(plain, _row("unquantized", 0, 0.9, 0, 0))
    )
    assert step_lines(plain) == []


def test_two_cards_are_compared_image_by_image(tmp_path, capsys):
    from evaluation.paired import main as paired_main

    def card(model_id: str, hits: str, dataset: str = "val") -> Path:
        row = dict(_row("QF4", 0.08, hits.count("1") / len(hits), 18, 0.4), hits=hits)
        rows = [
            dict(row, n_images=len(hits)),
            dict(row, setting="QF8", hits=None, n_images=len(hits)),
        ]
        path = tmp_path / f"{model_id}-{dataset}.json"
        path.write_text(json.dumps({"model_id": model_id, "dataset": dataset, "rows": rows}))
        return path

    assert paired_main([str(card("a", "1100")), str(card("b", "0111"))]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    # Only QF4 has outcomes on both sides; b gains images 3 and 4 and loses image 1.
    assert [(r["setting"], r["gained"], r["lost"]) for r in summary["rows"]] == [("QF4", 2, 1)]
    assert summary["rows"][0]["delta_points"] == 25.0 and (summary["a"], summary["b"]) == ("a", "b")
    with pytest.raises(SystemExit, match="not the same images"):
        paired_main([str(card("a", "1100")), str(card("b", "0111", dataset="train"))])


def test_the_card_says_when_no_channel_was_idle_enough_to_pin():
    from models.model_card import pinned_line

    assert "none; every channel varies" in pinned_line([])
    assert "was not given" in pinned_line(None) and ": 2 [5, 9]." in pinned_line([5, 9])


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="01", max_size=70))
def test_packed_outcomes_unpack_to_themselves(hits):
    from evaluation.pairs import pack_hits, unpack_hits

    assert unpack_hits(pack_hits(hits), len(hits)) == hits
    assert len(pack_hits(hits)) == -(-len(hits) // 4)
    with pytest.raises(ValueError):
        unpack_hits(pack_hits(hits) + "0", len(hits))
