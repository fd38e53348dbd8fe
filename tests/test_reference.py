"""The pixel-domain reference classifiers: registry, training, fine-tuning, ONNX bundles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evaluation.reference import ReferenceClassifier
from evaluation.spic_eval import labelled_images
from models.reference_bundle import load_reference_manifest
from models.zoo import create_model, list_models


@pytest.mark.parametrize("name", list_models("reference"))
def test_every_reference_model_classifies_any_size(name):
    model = create_model(name, num_classes=7).eval()
    for size in (64, 96, 224):
        with torch.no_grad():
            assert model(torch.rand(2, 3, size, size)).shape == (2, 7)


@pytest.mark.parametrize(
    ("name", "gflop", "mparams"), [("resnet18", 3.63, 11.2), ("resnet18-half", 0.97, 2.8)]
)
def test_documented_costs_are_what_the_models_cost(name, gflop, mparams):
    from models.network import count_conv_macs

    model = create_model(name).eval()
    assert round(2 * count_conv_macs(model) / 1e9, 2) == gflop
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == mparams


def test_unknown_reference_model_names_the_registered_ones():
    with pytest.raises(KeyError, match="resnet18-half"):
        create_model("vgg19")


def test_trained_reference_bundle_matches_its_checkpoint(tiny_reference, tiny_data):
    bundle = tiny_reference / "bundle"
    manifest = load_reference_manifest(bundle)
    assert manifest.finetune is None and manifest.architecture == "resnet-tiny"
    ckpt = torch.load(tiny_reference / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["bundle_id"] == manifest.model_id and ckpt["epoch"] == 2
    model = create_model("resnet-tiny", num_classes=2)
    model.load_state_dict(ckpt["model"])
    model.eval()
    clf = ReferenceClassifier(bundle)
    paths, _, _ = labelled_images(tiny_data / "val")
    from PIL import Image

    crops = [np.asarray(Image.open(p).convert("RGB").resize((64, 64))) for p in paths]
    with torch.no_grad():
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
        expected = model(x).argmax(1).numpy()
    np.testing.assert_array_equal(clf.predict(crops), expected)
    assert "spic-train-reference" in (bundle / "MODEL_CARD.md").read_text()


def test_finetune_matches_codec_qualities_to_spic_and_records_them(
    tiny_reference_ft, tiny_reference, tiny_bundle
):
    manifest = load_reference_manifest(tiny_reference_ft / "bundle")
    base = load_reference_manifest(tiny_reference / "bundle")
    spic = json.loads((tiny_bundle / "manifest.json").read_text())
    ft = manifest.finetune
    assert ft is not None and ft.base_model_id == base.model_id
    assert set(ft.qualities) == {"jpeg", "webp", "avif"}
    assert spic["model_id"] in ft.target_from and ft.target_bpp > 0
    assert manifest.label.endswith("FT")


def test_tampered_reference_bundle_is_refused(tiny_reference, tmp_path):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(tiny_reference / "bundle", bundle)
    with (bundle / "classifier.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="does not match its hash"):
        ReferenceClassifier(bundle)


def test_class_mismatch_names_both_class_lists(tiny_reference):
    clf = ReferenceClassifier(tiny_reference / "bundle")
    with pytest.raises(ValueError, match="n01440764"):
        clf.check_classes(["a", "b"])


def test_export_only_rebuilds_the_same_bundle(tiny_reference, tiny_data, tmp_path):
    import shutil

    from models.train_reference import main

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_reference / "checkpoint.pt", run / "checkpoint.pt")
    out = tmp_path / "again" / "bundle"
    args = ["--data", str(tiny_data), "--out", str(run), "--export-only", "--bundle-out", str(out)]
    assert main(args) == 0
    original = load_reference_manifest(tiny_reference / "bundle")
    assert load_reference_manifest(out).model_id == original.model_id
    card = (out / "MODEL_CARD.md").read_text()
    assert "--export-only" in card and f"--out {tiny_reference}" in card


def test_resume_continues_a_reference_run_exactly(tiny_reference, tiny_data, tmp_path):
    """A teacher stopped after one epoch and resumed ends with the weights, EMA aside, and the
    bundle of the run that went straight through: 2-core runs may span sessions."""
    import torch

    from models.train_reference import main
    from tests.conftest import TINY_REFERENCE_ARGS

    args = ["--data", str(tiny_data), "--out", str(tmp_path)]
    assert main([*args, *TINY_REFERENCE_ARGS, "--epochs-this-run", "1"]) == 0
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 1
    assert not (tmp_path / "bundle").exists()  # stopped early: nothing exported yet
    assert main([*args, "--resume"]) == 0
    resumed = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    straight = torch.load(tiny_reference / "checkpoint.pt", weights_only=False)
    assert resumed["step"] == straight["step"] and resumed["epoch"] == straight["epoch"]
    for k, v in straight["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, msg=k)
    assert load_reference_manifest(tmp_path / "bundle").model_id == (
        load_reference_manifest(tiny_reference / "bundle").model_id
    )
    assert (
        "--epochs-this-run 1\nspic-train-reference"
        in (tmp_path / "bundle" / "MODEL_CARD.md").read_text()
    )


def test_resume_refuses_new_settings_and_fine_tunes(tiny_reference, tiny_reference_ft, tiny_data):
    from models.train_reference import main

    with pytest.raises(SystemExit):  # argparse: --resume keeps the checkpoint's own config
        main(
            [
                "--data",
                str(tiny_data),
                "--out",
                str(tiny_reference),
                "--resume",
                "--set",
                "epochs=9",
            ]
        )
    with pytest.raises(SystemExit, match="not a resumable from-scratch run"):
        main(["--data", str(tiny_data), "--out", str(tiny_reference_ft), "--resume"])
