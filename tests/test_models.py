"""Every registered architecture: shapes, the quantizer's parity with shared/, and ONNX parity."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.export import export_onnx
from models.network import count_encoder_macs, quantize
from models.zoo import create_model, list_models
from shared.quantize import PAPER_QFS
from shared.quantize import quantize as np_quantize

MODELS = list_models("spic")


def test_registry_has_the_default():
    assert {"spic-s16", "spic-s8", "spic-tiny"} <= set(MODELS)
    with pytest.raises(KeyError, match="registered"):
        create_model("nope")


@pytest.mark.parametrize("name", MODELS)
def test_forward_shapes_and_rate(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    s = model.cfg.stride
    x = torch.rand(2, 3, 4 * s, 3 * s)
    out = model(x, qf=16)
    assert out["y"].shape == (2, model.cfg.latent_channels, 4, 3)
    assert out["y"].min() >= 0 and out["y"].max() <= 1
    assert out["x_hat"].shape == x.shape
    assert out["logits"].shape == (2, 7)
    lik = out["likelihoods"]
    assert lik.shape == out["y"].shape and (lik > 0).all() and (lik <= 1).all()
    assert model(x, qf=None)["likelihoods"] is None


@pytest.mark.parametrize("name", MODELS)
def test_density_sums_to_one_over_the_alphabet(name):
    model = create_model(name)
    for qf in PAPER_QFS:
        levels = torch.arange(qf + 1, dtype=torch.float32) / qf
        y_hat = levels.view(1, 1, -1, 1).expand(1, model.cfg.latent_channels, qf + 1, 1)
        total = model.entropy_model.likelihood(y_hat, qf).sum(dim=2)
        torch.testing.assert_close(total, torch.ones_like(total), atol=1e-4, rtol=0)


def test_default_encoder_fits_a_camera():
    macs = count_encoder_macs(create_model("spic-s16"), 224)
    assert 2 * macs <= 0.6e9  # FLOPs = 2 * multiply-accumulates


def test_torch_quantizer_matches_shared():
    rng = np.random.default_rng(0)
    y = rng.random((4, 8, 5, 5), dtype=np.float32)
    for qf in PAPER_QFS:
        edges = (np.arange(qf) + 0.5) / qf  # exactly on the rounding boundaries
        y.flat[: len(edges)] = edges[: y.size].astype(np.float32)
        ours = quantize(torch.from_numpy(y), qf, "symbols").numpy()
        np.testing.assert_array_equal(ours, np_quantize(y, qf))


def test_straight_through_gradient_is_identity():
    y = torch.rand(3, 4, requires_grad=True)
    quantize(y, 16, "ste").sum().backward()
    torch.testing.assert_close(y.grad, torch.ones_like(y))


@pytest.mark.parametrize("name", MODELS)
def test_onnx_matches_torch(name, tmp_path):
    torch.manual_seed(1)
    model = create_model(name).eval()
    export_onnx(model, tmp_path)
    s = model.cfg.stride
    x = torch.rand(4, 3, 6 * s, 5 * s)  # another size than the export probe: axes are dynamic
    with torch.no_grad():
        y = model.g_a(x)
        logits = model.h_c(quantize(y, 48, "ste"))
        x_hat = model.g_s(quantize(y, 48, "ste"))
    sess = {
        r: ort.InferenceSession(str(tmp_path / f"{r}.onnx"))
        for r in ("encoder", "decoder", "classifier")
    }
    y_ort = sess["encoder"].run(None, {"image": x.numpy()})[0]
    for qf in PAPER_QFS:
        agree = (np_quantize(y_ort, qf) == quantize(y, qf, "symbols").numpy()).mean()
        assert agree >= 0.999, f"QF {qf}: only {agree:.4%} of symbols agree"
    y_hat = np_quantize(y_ort, 48).astype(np.float32) / 48
    np.testing.assert_allclose(
        sess["classifier"].run(None, {"latent": y_hat})[0], logits.numpy(), atol=1e-3
    )
    np.testing.assert_allclose(
        sess["decoder"].run(None, {"latent": y_hat})[0], x_hat.numpy(), atol=1e-3
    )


def test_the_training_pass_exposes_the_latent_before_its_sigmoid():
    """The saturation penalty reads z; the exported g_a still ends in the sigmoid."""
    import torch

    from models.zoo import create_model

    model = create_model("spic-tiny", kind="spic").eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x, 16, decode=False)
        assert torch.allclose(torch.sigmoid(out["z"]), out["y"])
        assert torch.allclose(model.g_a(x), out["y"])
