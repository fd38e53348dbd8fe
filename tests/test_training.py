"""spic-train on generated data: logs, self-describing checkpoints, exact resume, DDP on 2 CPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.train import main
from tests.conftest import TINY_TRAIN_ARGS, set_args

ROOT = Path(__file__).resolve().parent.parent


def test_run_writes_log_and_checkpoint(tiny_run):
    ckpt = torch.load(tiny_run / "checkpoint.pt", weights_only=False)
    assert {
        "config",
        "model",
        "optimizer",
        "scheduler",
        "step",
        "epoch",
        "alpha",
        "classes",
    } <= ckpt.keys()
    assert ckpt["epoch"] == 2 and ckpt["step"] > 0
    assert ckpt["config"]["model"] == "spic-tiny" and ckpt["config"]["train"]["epochs"] == 2
    records = [json.loads(line) for line in (tiny_run / "log.jsonl").read_text().splitlines()]
    vals = [r["val"] for r in records if "val" in r]
    assert len(vals) == 2 and {"top1_unquantized", "qf16", "qf48", "qf128"} <= vals[-1].keys()
    assert json.loads((tiny_run / "config.json").read_text())["model"] == "spic-tiny"


def test_resume_continues_exactly(tiny_data, tiny_run, tmp_path):
    args = ["--data", str(tiny_data), "--out", str(tmp_path), *TINY_TRAIN_ARGS]
    assert main([*args, "--epochs-this-run", "1"]) == 0
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 1
    assert main(["--data", str(tiny_data), "--out", str(tmp_path), "--resume"]) == 0
    resumed = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    straight = torch.load(tiny_run / "checkpoint.pt", weights_only=False)
    assert resumed["step"] == straight["step"]
    for k, v in straight["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, msg=k)


def test_resume_refuses_new_settings(tiny_data, tiny_run):
    try:
        main(["--data", str(tiny_data), "--out", str(tiny_run), "--resume", "--set", "epochs=9"])
    except SystemExit as exc:
        assert "checkpoint's own config" in str(exc)
    else:
        raise AssertionError("--resume with --set must refuse")


def test_ddp_on_two_cpu_processes(tiny_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "models.train",
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path),
        *TINY_TRAIN_ARGS,
        "--set",
        "epochs=1",
        "--set",
        "threads=1",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    # 16 training images, global batch 4 split over 2 ranks: 4 steps per epoch, not 8.
    assert ckpt["epoch"] == 1 and ckpt["step"] == 4


def test_the_reconstruction_weight_grows_with_qf_only_when_asked():
    from models.config import TrainConfig
    from models.objective import mse_weight

    v1 = TrainConfig()  # exponent 0: every QF weighs the same (v1's recipe)
    assert {mse_weight(q, v1) for q in (2, 16, 255)} == {1.0}
    ladder = TrainConfig(mse_qf_exponent=1.0)
    assert mse_weight(16, ladder) == 1.0 and mse_weight(128, ladder) == 8.0
    scaled = TrainConfig(mse_weight=30.0, mse_qf_exponent=0.5)
    assert mse_weight(16, scaled) == 30.0 and mse_weight(64, scaled) == 60.0
    assert mse_weight(4, ladder) == 0.25


def test_every_committed_training_config_loads_and_names_a_registered_model(retired_bundle):
    """Each config loads and names a registered model; its teacher is a reference bundle whose
    seal holds: in the tree, or retired (models/bundles/retired.json) and read back from history."""
    from pathlib import Path

    from models.config import TrainConfig
    from models.zoo import list_models

    configs = sorted((Path(__file__).parent.parent / "models" / "configs").glob("*.json"))
    assert configs
    for path in configs:
        cfg = TrainConfig.from_json(path)  # an unknown key raises
        assert cfg.model in list_models("spic"), path.name
        assert cfg.rate_target_qf in cfg.qfs, path.name
        if cfg.teacher:  # a committed reference bundle whose seal holds
            from models.reference_bundle import load_reference_manifest

            teacher = Path(__file__).parent.parent / cfg.teacher
            if not teacher.is_dir():  # left the tree (issue 33): make old-codecs writes it back
                teacher = retired_bundle(teacher.name)
            load_reference_manifest(teacher)


def test_the_default_bundle_was_trained_with_the_committed_config():
    """The card's training config (what the run recorded) is models/configs' file, field for
    field: the committed command reproduces the shipped weights' recipe."""
    import re

    from models.config import TrainConfig
    from shared.bundles import DEFAULT_BUNDLE

    card = (DEFAULT_BUNDLE / "MODEL_CARD.md").read_text()
    recorded = re.search(r"Training config:\n\n```json\n(.*?)\n```", card, flags=re.S)
    assert recorded, "the card has no training config"
    committed = Path(__file__).parent.parent / "models" / "configs" / "spic-split-s16-base-qfs.json"
    # Fields added since the run take their defaults, which keep the behaviour the run had.
    ran = TrainConfig.from_dict(json.loads(recorded.group(1)))
    assert ran.to_dict() == TrainConfig.from_json(committed).to_dict()


def test_distillation_loss_is_zero_only_when_the_student_agrees():
    import torch

    from models.distill import distillation_loss

    t = torch.tensor([[3.0, 1.0, -2.0], [0.0, 2.0, 0.5]])
    assert distillation_loss(t + 7.0, t, 4.0).item() == pytest.approx(0.0, abs=1e-6)  # shift-free
    assert distillation_loss(t.flip(1), t, 4.0).item() > 0.01


def test_training_distils_from_a_reference_bundle(tiny_data, tiny_reference, tmp_path):
    from models.distill import Teacher
    from models.train import main
    from models.zoo import load_checkpoint

    bundle = tiny_reference / "bundle"
    args = ["--data", str(tiny_data), "--out", str(tmp_path / "kd"), *TINY_TRAIN_ARGS]
    assert main([*args, *set_args(teacher=str(bundle), distill_weight=0.7)]) == 0
    _, ckpt = load_checkpoint(tmp_path / "kd" / "checkpoint.pt")
    assert ckpt["config"]["train"]["teacher"] == str(bundle)
    with pytest.raises(ValueError, match="has classes"):
        Teacher(bundle, ["n00000000", "n00000001"])


def test_the_saturation_penalty_spares_logits_inside_its_margin():
    from models.objective import saturation_penalty

    z = torch.tensor([0.0, 1.0, -2.5, 4.0, -5.0])
    assert saturation_penalty(z, 0.0).item() == pytest.approx((0 + 1 + 6.25 + 16 + 25) / 5)
    assert saturation_penalty(z, 3.0).item() == pytest.approx((1 + 4) / 5)


def test_qf_weights_steer_the_draw_and_bad_weights_are_refused(tiny_data, tmp_path):
    from models.config import TrainConfig

    out = tmp_path / "weighted"
    weights = set_args(qfs=[2, 16, 48], qf_weights=[0, 1, 0], log_every=1)
    assert main(["--data", str(tiny_data), "--out", str(out), *TINY_TRAIN_ARGS, *weights]) == 0
    drawn = {
        r["qf"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "qf" in r
    }
    assert drawn == {16}
    for bad in ([1, 1], [1, -1, 1], [0, 0, 0]):
        with pytest.raises(ValueError, match="qf_weights"):
            TrainConfig(qfs=(2, 16, 48), qf_weights=tuple(bad))
    assert TrainConfig(qfs=(2, 16), qf_weights=(3, 1)).qf_probabilities() == [0.75, 0.25]


def test_a_fine_tune_starts_from_the_checkpoint_and_carries_its_history(
    tiny_data, tiny_run, tmp_path
):
    start = torch.load(tiny_run / "checkpoint.pt", weights_only=False)
    out = tmp_path / "ft"
    # lr 0: the weights cannot move, so they must be the start's (BatchNorm statistics still do).
    ft = set_args(init_checkpoint=str(tiny_run / "checkpoint.pt"), lr=0.0, epochs=1)
    assert main(["--data", str(tiny_data), "--out", str(out), *TINY_TRAIN_ARGS, *ft]) == 0
    tuned = torch.load(out / "checkpoint.pt", weights_only=False)
    learned = [k for k in start["model"] if "running_" not in k and "num_batches" not in k]
    assert learned
    for k in learned:
        torch.testing.assert_close(tuned["model"][k], start["model"][k], msg=k)
    assert tuned["commands"][:-1] == start["commands"]
    assert "init_checkpoint" in tuned["commands"][-1]
    assert tuned["wall_seconds"] > start["wall_seconds"]

    other = set_args(init_checkpoint=str(tiny_run / "checkpoint.pt"), model="spic-s8")
    with pytest.raises(SystemExit, match="holds a spic-tiny"):
        main(["--data", str(tiny_data), "--out", str(tmp_path / "x"), *TINY_TRAIN_ARGS, *other])
    missing = set_args(init_checkpoint=str(tmp_path / "none.pt"))
    with pytest.raises(SystemExit, match="no checkpoint at"):
        main(["--data", str(tiny_data), "--out", str(tmp_path / "y"), *TINY_TRAIN_ARGS, *missing])


def test_a_run_on_a_webp_copy_records_the_copy_and_its_card_says_so(tiny_data, tmp_path):
    """scripts/webp_copy.py leaves PROVENANCE.txt in the copy; spic-train keeps it in the
    checkpoint and spic-export's card prints it, so a card whose --data names some copy's path
    (a GPU run's /tmp/d/data) also says what that copy was. Original data records nothing."""
    import zipfile

    from models.export import main as export_main

    script = Path(__file__).parent.parent / "scripts" / "webp_copy.py"
    args = [str(tiny_data), str(tmp_path / "copy"), "--zip", "--short-side", "48"]
    subprocess.run([sys.executable, str(script), *args, "--quality", "60"], check=True)
    with zipfile.ZipFile(tmp_path / "copy" / "data.zip") as z:
        z.extractall(tmp_path / "unzipped")
    data = tmp_path / "unzipped" / "data"
    note = (data / "PROVENANCE.txt").read_text()
    assert f"A lossy copy of {tiny_data}" in note and "--short-side 48" in note
    assert main(["--data", str(data), "--out", str(tmp_path / "run"), *TINY_TRAIN_ARGS]) == 0
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["data_provenance"] == note.strip()
    bundle = tmp_path / "bundle"
    export = [str(tmp_path / "run" / "checkpoint.pt"), "--out", str(bundle), "--data"]
    assert export_main([*export, str(data / "train"), "--size", "64"]) == 0
    card = " ".join((bundle / "MODEL_CARD.md").read_text().split())
    assert "was not the original dataset" in card and "--short-side 48" in card


def test_a_run_on_original_data_records_no_copy(tiny_run, tiny_bundle):
    ckpt = torch.load(tiny_run / "checkpoint.pt", weights_only=False)
    assert ckpt["data_provenance"] == ""
    assert "was not the original dataset" not in (tiny_bundle / "MODEL_CARD.md").read_text()
