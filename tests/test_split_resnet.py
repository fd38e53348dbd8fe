"""The split-ResNet SPIC (models/split_resnet.py): both halves start from a reference bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.network import count_encoder_macs
from models.reference_bundle import ReferenceModel
from models.split_resnet import (
    init_from_reference,
    matched_layers,
    reference_network,
    reference_trunk,
)
from models.train import main
from models.zoo import create_model, load_checkpoint
from tests.conftest import TINY_REFERENCE_ARGS, TINY_TRAIN_ARGS, set_args


@pytest.fixture(scope="module")
def reference(retired_bundle) -> Path:
    """The shipped recipes' first reference classifier; it left the tree (make old-codecs)."""
    return retired_bundle("reference-imagenette")  # type: ignore[no-any-return]


def joined(model, x: torch.Tensor) -> torch.Tensor:
    """The camera's stages followed by the cloud's, the bottleneck (latent conv, sigmoid, adapter)
    left out: with ``latent_stride`` 1 this is the reference's own network."""
    g_a, h_c = model.g_a, model.h_c
    features = h_c.features[2:](g_a.net[:-2]((x - g_a.mean) / g_a.std))
    return h_c.head[-1](features.mean((2, 3)))  # type: ignore[no-any-return]


def test_the_halves_joined_without_the_bottleneck_are_the_reference(reference):
    model = create_model("spic-rn18h").eval()
    model_id = init_from_reference(model, reference)
    ref_model = ReferenceModel(reference)
    assert model_id == ref_model.manifest.model_id
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        ours = joined(model, x).numpy()
    np.testing.assert_allclose(ours, ref_model.logits(x.numpy()), atol=1e-4, rtol=1e-4)


def test_the_torch_teacher_is_the_bundles_classifier(reference):
    """A GPU run's teacher (the bundle in torch) gives the logits a CPU run's (ONNX Runtime) does."""
    x = torch.rand(3, 3, 128, 96)
    with torch.no_grad():
        ours = reference_network(reference)(x).numpy()
    np.testing.assert_allclose(
        ours, ReferenceModel(reference).logits(x.numpy()), atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize(
    ("name", "gflop", "stride"),
    [("spic-rn18h", 0.562, 8), ("spic-rn18h-lite", 0.353, 8), ("spic-rn18h-s16", 0.562, 16)],
)
def test_the_camera_half_fits_the_budget(name, gflop, stride):
    model = create_model(name)
    assert 2 * count_encoder_macs(model) / 1e9 == pytest.approx(gflop, abs=0.001)
    assert gflop <= 0.6 and model.cfg.stride == stride
    # 8 x 28 x 28 or 32 x 14 x 14: 6272 symbols at 224² either way
    assert model.cfg.latent_channels * (224 // stride) ** 2 == 6272


def test_a_reference_of_other_widths_or_classes_is_refused_by_name(reference):
    with pytest.raises(ValueError, match="has convolutions"):
        init_from_reference(create_model("spic-rn-tiny"), reference)
    with pytest.raises(ValueError, match="has classes"):
        init_from_reference(create_model("spic-rn18h"), reference, ["n00000000"])


def test_training_starts_from_the_reference(tiny_data, tiny_reference, tmp_path):
    bundle = tiny_reference / "bundle"
    args = ["--data", str(tiny_data), "--out", str(tmp_path), *TINY_TRAIN_ARGS]
    assert main([*args, *set_args(model="spic-rn-tiny", init_from=str(bundle), epochs=1)]) == 0
    trained, _ = load_checkpoint(tmp_path / "checkpoint.pt")
    start = create_model("spic-rn-tiny", num_classes=trained.cfg.num_classes)
    init_from_reference(start, bundle)
    # One short epoch moves the reference's weights but leaves them near where they started.
    stem_trained, stem_start = trained.g_a.net[0].weight, start.g_a.net[0].weight
    assert not torch.equal(stem_trained, stem_start)
    assert (stem_trained - stem_start).norm() < 0.5 * stem_start.norm()


@pytest.mark.parametrize(
    ("name", "stages_after", "shape"),
    [
        # The stride-8 cuts meet the reference after its second stage (28 x 28 x 64 at 224²),
        ("spic-rn18h", 0, (2, 64, 8, 12)),
        ("spic-rn18h-lite", 0, (2, 64, 8, 12)),
        # the stride-16 cut after its third (14 x 14 x 128).
        ("spic-rn18h-s16", 1, (2, 128, 4, 6)),
    ],
)
def test_the_feature_teacher_is_the_reference_where_the_cloud_first_stage_ends(
    name, stages_after, shape, reference
):
    full = create_model("spic-rn18h").eval()
    init_from_reference(full, reference)
    model = create_model(name)
    trunk = reference_trunk(model.cfg, reference)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        theirs = trunk((x - full.g_a.mean) / full.g_a.std)
        # The reference's own path without the bottleneck: spic-rn18h's camera stages, then as
        # many of its cloud stages (after the adapter) as the cut needs.
        reference_path = full.g_a.net[:-2]((x - full.g_a.mean) / full.g_a.std)
        blocks = sum(full.cfg.resnet_blocks[2 : 2 + stages_after])
        reference_path = full.h_c.features[2 : 2 + blocks](reference_path)
        ours = model.h_c.features[: matched_layers(model.cfg)](model.g_a(x))
    assert not any(p.requires_grad for p in trunk.parameters())
    torch.testing.assert_close(theirs, reference_path)
    assert ours.shape == theirs.shape == shape


def test_feature_distillation_trains_and_is_logged(tiny_data, tiny_reference, tmp_path):
    bundle = str(tiny_reference / "bundle")
    args = ["--data", str(tiny_data), "--out", str(tmp_path), *TINY_TRAIN_ARGS]
    fd = dict(model="spic-rn-tiny", init_from=bundle, feature_distill_weight=1.0, log_every=1)
    assert main([*args, *set_args(**fd, epochs=1)]) == 0
    steps = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    feats = [r["feature_distill"] for r in steps if "step" in r]
    assert feats and all(0 < f < 10 for f in feats)
    with pytest.raises(SystemExit, match="needs a resnet model"):
        main([*args, "--out", str(tmp_path / "conv"), *set_args(feature_distill_weight=1.0)])


def test_a_wider_logit_teacher_leaves_the_features_to_init_from(
    tiny_data, tiny_reference, tmp_path
):
    from models import train_reference

    wide = tmp_path / "wide"
    ref_args = [*TINY_REFERENCE_ARGS, *set_args(model="resnet18-half", epochs=1)]
    assert train_reference.main(["--data", str(tiny_data), "--out", str(wide), *ref_args]) == 0
    fd = dict(
        model="spic-rn-tiny",
        init_from=str(tiny_reference / "bundle"),
        teacher=str(wide / "bundle"),
        feature_distill_weight=1.0,
        epochs=1,
    )
    args = ["--data", str(tiny_data), "--out", str(tmp_path / "student"), *TINY_TRAIN_ARGS]
    assert main([*args, *set_args(**fd)]) == 0
