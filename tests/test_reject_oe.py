"""The ``oe`` reject rule (shared.reject_oe, evaluation.outlier_exposure): trained on a frozen head,
stored sealed in the bundle, evaluated in numpy when serving. Synthetic latents, no dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evaluation.outlier_exposure import inputs_at, spread, train_detector
from evaluation.unknown import DETECTOR_FILE, write_rule
from shared.bundles import DEFAULT_BUNDLE
from shared.heads import Head
from shared.manifest import load_manifest
from shared.reject import RejectRule, auroc, familiar_features, prototypes, threshold_for
from shared.reject_oe import INPUTS, OEDetector, load_detector, oe_inputs, oe_score


def _familiar(n: int, seed: int) -> np.ndarray:
    """Frames like the head's own: mid-grey latents with texture."""
    rng = np.random.default_rng(seed)
    return (0.5 + 0.25 * rng.standard_normal((n, 32, 14, 14))).clip(0, 1).astype(np.float32)


def _foreign(n: int, seed: int) -> np.ndarray:
    """Frames unlike them: nearly flat latents, as of a blank wall."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(0.05, 0.2, (n, 32, 1, 1))
    return (level + 0.01 * rng.standard_normal((n, 32, 14, 14))).astype(np.float32)


@pytest.fixture(scope="module")
def head() -> Head:
    m = load_manifest(DEFAULT_BUNDLE)
    return Head(
        "x", "0" * 16, m.model_id, m.classes, DEFAULT_BUNDLE / "classifier.onnx", None, None
    )


def _frames(head: Head, latents: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What evaluation.unknown's Scorer gives for these latents."""
    logits, raw = head.session.run(["logits", "features"], {"latent": latents})
    return logits, familiar_features(latents, raw), raw


def test_the_detector_is_the_logistic_model_it_was_trained_as():
    rng = np.random.default_rng(0)
    x_in = rng.normal(1.0, 1.0, (200, len(INPUTS)))
    x_out = rng.normal(-1.0, 1.0, (80, len(INPUTS)))
    det = train_detector(x_in, x_out)
    # Its score is the standardised linear log-odds, computed as written in its JSON.
    again = OEDetector.model_validate_json(det.model_dump_json())
    z = (x_in - np.array(again.mean)) / np.array(again.scale)
    assert np.allclose(again(x_in), z @ np.array(again.weights) + again.bias, atol=1e-5)
    assert auroc(det(x_in), det(x_out)) > 0.95
    # Deterministic: the same frames give the same detector.
    assert train_detector(x_in, x_out).weights == det.weights
    with pytest.raises(ValueError, match="reads"):
        OEDetector.model_validate(again.model_dump() | {"inputs": ["knn"] * len(INPUTS)})
    with pytest.raises(ValueError, match="scales are positive"):
        OEDetector.model_validate(again.model_dump() | {"scale": [0.0] * len(INPUTS)})


def test_spread_deals_every_photo_to_one_qf():
    paths = [Path(f"{i}.png") for i in range(10)]
    parts = spread(paths, [2, 4, 8], 0)
    assert sorted(p for part in parts.values() for p in part) == sorted(paths)
    assert [len(p) for p in parts.values()] == [4, 3, 3]


def test_a_bundle_with_an_oe_rule_rejects_the_foreign_and_keeps_its_codec_id(head, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    before = load_manifest(bundle)
    bank = prototypes(_frames(head, _familiar(64, 1))[1], 16).astype(np.float16)
    bank32 = bank.astype(np.float32)

    def run(paths: list[Path], qf: int, what: str):
        # A "photo" here is a seed: familiar ones even, foreign ones odd.
        seeds = [int(p.stem) for p in paths]
        make = [_familiar(1, s) if s % 2 == 0 else _foreign(1, s) for s in seeds]
        return _frames(head, np.concatenate(make))

    x_in = inputs_at(run, [Path(f"{2 * i}.x") for i in range(60)], [2, 4], bank32, 1, 0)
    x_out = inputs_at(run, [Path(f"{2 * i + 1}.x") for i in range(60)], [2, 4], bank32, 1, 0)
    det = train_detector(x_in, x_out)
    # The training side (inputs_at, from the Scorer's outputs) and the serving side agree.
    lo, fe, raw = _frames(head, _familiar(8, 500))
    assert np.allclose(
        det(oe_inputs(fe, raw, lo, bank32, 1)), oe_score(fe, raw, lo, bank32, 1, det)
    )

    # enough frames that the 95% threshold, and the share it accepts, are not one frame's luck
    lo, fe, raw = _frames(head, _familiar(200, 1000))
    val = oe_score(fe, raw, lo, bank32, 1, det)
    result = {
        "chosen": "oe",
        "rules": {"oe": {"threshold": threshold_for(val, 0.95), "per_source": {}}},
        "accept": 0.95,
        "k": 1,
        "n_val": len(val),
        "_bank": bank,
        "_detector": det,
    }
    write_rule(bundle, result, "test")
    after = load_manifest(bundle)
    assert after.model_id == before.model_id
    rule = after.head.reject if after.head else None
    assert rule is not None and rule.score == "oe" and rule.detector == "reject_detector"
    assert after.files["reject_detector"].path == DETECTOR_FILE
    assert "Reject rule `oe`" in (bundle / "MODEL_CARD.md").read_text()

    served = Head.embedded(bundle, after)
    familiar = served.run(_familiar(100, 2000))
    foreign = served.run(_foreign(20, 2001))
    assert familiar.unknown.mean() <= 0.2 and foreign.unknown.all()
    # The labels are the head's, the rule only says which to withhold.
    x = _familiar(4, 3000)
    assert np.array_equal(familiar.probs.shape, (100, 10))
    assert np.allclose(served.run(x).probs, head.run(x).probs)

    # A detector changed after sealing is refused when the bundle is opened.
    d = json.loads((bundle / DETECTOR_FILE).read_text())
    d["bias"] += 1.0
    (bundle / DETECTOR_FILE).write_text(json.dumps(d))
    with pytest.raises(ValueError, match="does not match its hash"):
        load_manifest(bundle)


def test_an_oe_rule_needs_its_detector_and_a_detector_is_bounded(tmp_path):
    m = load_manifest(DEFAULT_BUNDLE)
    rule = RejectRule(score="oe", threshold=0.0, bank="reject_bank")
    bank = DEFAULT_BUNDLE / "reject_bank.npy"
    with pytest.raises(ValueError, match="needs its detector"):
        Head("x", "0" * 16, m.model_id, m.classes, DEFAULT_BUNDLE / "classifier.onnx", rule, bank)
    big = tmp_path / "d.json"
    big.write_text(" " * (65 << 10))
    with pytest.raises(ValueError, match="at most"):
        load_detector(big)


def test_a_rule_without_a_detector_serialises_as_before():
    # Heads sealed before the field existed keep their ids: the absent detector is not written.
    assert "detector" not in RejectRule(score="knn", threshold=1.0, bank="b").model_dump()
    assert RejectRule(score="oe", threshold=1.0, detector="d").model_dump()["detector"] == "d"
