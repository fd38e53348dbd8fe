"""Mixup/CutMix and the weight EMA: exact on small tensors, and wired into both trainers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.ema import ema_of, final_weights
from models.mixing import mix_batch, mixed_cross_entropy
from tests.conftest import TINY_REFERENCE_ARGS, TINY_TRAIN_ARGS, set_args


def _batch(n: int = 6, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).clone()
    return x, torch.arange(n)  # image i is filled with the value i, labelled i


def test_no_alpha_leaves_the_batch_and_the_draws_alone():
    x, y = _batch()
    rng = np.random.default_rng(0)
    mixed = mix_batch(x, y, rng, 0.0, 0.0)
    assert mixed.x is x and mixed.lam == 1.0 and torch.equal(mixed.labels_b, y)
    assert rng.random() == np.random.default_rng(0).random()  # nothing was drawn
    with pytest.raises(ValueError):
        mix_batch(x, y, rng, -1.0, 0.0)


def test_cutmix_lambda_is_the_share_of_pixels_each_image_keeps():
    x, y = _batch()
    for seed in range(20):
        mixed = mix_batch(x, y, np.random.default_rng(seed), 0.0, 1.0)
        # Image i keeps its own value outside the box and takes labels_b[i]'s inside it.
        own = (mixed.x[:, 0] == x[:, 0]).float().mean((1, 2))
        pasted = (mixed.x[:, 0] == mixed.labels_b.float().view(-1, 1, 1)).float().mean((1, 2))
        moved = mixed.labels_b != y
        torch.testing.assert_close(own[moved], torch.full_like(own[moved], mixed.lam))
        torch.testing.assert_close(pasted[moved], 1 - own[moved])
        assert sorted(mixed.labels_b.tolist()) == y.tolist()  # a permutation of the batch


def test_mixup_blends_each_image_with_its_partner_by_lambda():
    x, y = _batch()
    mixed = mix_batch(x, y, np.random.default_rng(3), 0.4, 0.0)
    expected = mixed.lam * y.float() + (1 - mixed.lam) * mixed.labels_b.float()
    torch.testing.assert_close(mixed.x[:, 0, 0, 0], expected)
    assert 0.0 <= mixed.lam <= 1.0


def test_the_mixed_loss_weighs_both_labels_by_lambda():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    a, b = torch.tensor([0, 1, 2, 3, 0]), torch.tensor([3, 2, 1, 0, 1])
    x, _ = _batch(5)
    mixed = mix_batch(x, a, np.random.default_rng(1), 0.4, 0.0)
    mixed = type(mixed)(mixed.x, a, b, 0.3)
    expected = 0.3 * F.cross_entropy(logits, a) + 0.7 * F.cross_entropy(logits, b)
    torch.testing.assert_close(mixed_cross_entropy(logits, mixed, 0.0), expected)


def test_the_average_follows_the_ema_recursion():
    net = torch.nn.Linear(2, 1)
    assert ema_of(net, 0.0) is None
    with pytest.raises(ValueError):
        ema_of(net, 1.0)
    ema = ema_of(net, 0.9)
    assert ema is not None
    expected = net.weight.detach().clone()  # the first update copies
    for step in range(4):
        with torch.no_grad():
            net.weight.add_(1.0 + step)
        ema.update_parameters(net)
        expected = net.weight.detach().clone() if step == 0 else 0.9 * expected + 0.1 * net.weight
    torch.testing.assert_close(ema.module.weight, expected)


def test_spic_train_keeps_an_average_that_export_reads_and_resume_continues(tiny_data, tmp_path):
    from models.train import main
    from models.zoo import load_checkpoint

    extra = set_args(ema_decay=0.5, cutmix_alpha=1.0, mixup_alpha=0.2)
    straight = tmp_path / "straight"
    args = ["--data", str(tiny_data), *TINY_TRAIN_ARGS, *extra]
    assert main([*args, "--out", str(straight)]) == 0
    ckpt = torch.load(straight / "checkpoint.pt", weights_only=False)
    assert set(ckpt["ema_model"]) == set(ckpt["model"])
    moved = [k for k, v in ckpt["model"].items() if not torch.equal(v, ckpt["ema_model"][k])]
    assert moved  # an average, not a copy
    key = moved[0]
    model, _ = load_checkpoint(straight / "checkpoint.pt")
    torch.testing.assert_close(model.state_dict()[key], ckpt["ema_model"][key])
    assert final_weights({"model": ckpt["model"]}) is ckpt["model"]

    split = tmp_path / "split"
    assert main([*args, "--out", str(split), "--epochs-this-run", "1"]) == 0
    assert main(["--data", str(tiny_data), "--out", str(split), "--resume"]) == 0
    resumed = torch.load(split / "checkpoint.pt", weights_only=False)
    for k, v in ckpt["ema_model"].items():
        torch.testing.assert_close(resumed["ema_model"][k], v, msg=k)


def test_the_reference_bundle_is_exported_from_the_average(tiny_data, tmp_path):
    from models.reference_bundle import ReferenceModel
    from models.train_reference import main

    extra = set_args(ema_decay=0.5, cutmix_alpha=1.0)
    out = tmp_path / "ref"
    assert main(["--data", str(tiny_data), "--out", str(out), *TINY_REFERENCE_ARGS, *extra]) == 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    from models.reference import ResNet, ResNetConfig

    averaged, live = (ResNet(ResNetConfig.from_dict(ckpt["arch"])).eval() for _ in range(2))
    averaged.load_state_dict(ckpt["ema_model"])
    live.load_state_dict(ckpt["model"])
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    exported = ReferenceModel(out / "bundle").logits(x)
    with torch.no_grad():
        ours, theirs = averaged(torch.from_numpy(x)).numpy(), live(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(exported, ours, atol=1e-4)
    assert np.abs(exported - theirs).max() > 1e-3
