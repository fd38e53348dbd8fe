"""spic-train --recipe full (models/recipe.py): the whole recipe on a folder of classes, tiny."""

from __future__ import annotations

import json
import re

from models.recipe import STAGES, as_flags, duration
from models.train import main
from shared.manifest import load_manifest
from tests.conftest import _TINY, set_args

# Every stage tiny: 64² crops, one epoch each, spic-rn-tiny split from a resnet-tiny teacher.
TINY = {**_TINY, "epochs": 1}
TEACHER = [a.replace("--set", "--set-teacher") for a in set_args(model="resnet-tiny", **TINY)]
STUDENT = set_args(model="spic-rn-tiny", **TINY, eval_every=1)
OTHERS = ["--set-export", "size=64", "--set-int8", "images=8", "--set-card", "no-progress=true"]


def test_the_recipe_makes_a_bundle_of_the_folders_classes_and_resumes(tiny_data, tmp_path, capsys):
    out, bundle = tmp_path / "run", tmp_path / "bundles" / "my-model"
    argv = ["--data", str(tiny_data), "--out", str(out), "--recipe", "full"]
    argv += ["--bundle-out", str(bundle), *TEACHER, *STUDENT, *OTHERS]
    assert main(argv) == 0
    err = capsys.readouterr().err
    for i, stage in enumerate(STAGES, 1):
        assert f"[recipe] {i}/5 {stage}: start" in err
        assert re.search(rf"\[recipe\] {i}/5 {stage}: done in \d+s, .* ETA \S+ for the", err)
        assert (out / stage / "recipe.json").is_file()
    # The ETA is refined after each training epoch.
    assert re.search(r"\[recipe\] 1/5 teacher: epoch 1/1, \d+s elapsed, ETA \S+ for the", err)

    manifest = load_manifest(bundle)
    assert [c.id for c in manifest.classes] == sorted(
        p.name for p in (tiny_data / "train").iterdir()
    )
    assert manifest.name == "my-model"
    assert "encoder_int8" in manifest.files and (bundle / "encoder.int8.onnx").is_file()
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "spic-card --bundle" in card and "spic-int8" in card
    rows = json.loads((bundle / "eval.json").read_text())["rows"]
    assert any("INT8" in r["classifier"] for r in rows)
    # The student started from the teacher's bundle, which also taught it.
    student = json.loads((out / "student" / "config.json").read_text())
    assert student["teacher"] == student["init_from"] == str(out / "teacher" / "bundle")

    # The same command again: every stage is complete, nothing reruns, the bundle stays.
    mtime = (bundle / "manifest.json").stat().st_mtime_ns
    assert main(argv) == 0
    err = capsys.readouterr().err
    for i, stage in enumerate(STAGES, 1):
        assert f"[recipe] {i}/5 {stage}: complete in {out / stage}, skipped" in err
    assert ": start" not in err and "already this bundle" in err
    assert (bundle / "manifest.json").stat().st_mtime_ns == mtime

    # The student's folder holds its checkpoint but no completion record, as after Ctrl-C: it
    # continues from that checkpoint, and every later stage is made again from its output.
    (out / "student" / "recipe.json").unlink()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"1/5 teacher: complete in {out / 'teacher'}, skipped" in err
    assert "2/5 student: continuing from its last checkpoint" in err
    assert all(f"{i}/5 {s}: start" in err for i, s in enumerate(STAGES[2:], 3))
    assert load_manifest(bundle).model_id == manifest.model_id  # the same weights, made again


def test_stage_settings_become_flags_and_durations_read_well():
    assert as_flags(["size=64", "no-progress=true"]) == ["--size", "64", "--no-progress"]
    assert [duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]
