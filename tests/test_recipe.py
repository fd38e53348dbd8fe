"""spic-train --recipe full (models/recipe.py): the whole recipe on a folder of classes, tiny."""

from __future__ import annotations

import json
import re

from evaluation.pairs import load_card
from models.recipe import STAGES, Recipe, as_flags, duration
from models.train import main, parse_args
from shared.manifest import load_manifest
from tests.conftest import _TINY, set_args

# Every stage tiny: 64² crops, one epoch each, spic-rn-tiny split from a resnet-tiny teacher.
TINY = {**_TINY, "epochs": 1}
TEACHER = [a.replace("--set", "--set-teacher") for a in set_args(model="resnet-tiny", **TINY)]
STUDENT = set_args(model="spic-rn-tiny", **TINY, eval_every=1)
OTHERS = ["--set-export", "size=64", "--set-int8", "images=8", "--set-card", "no-progress=true"]


def test_the_recipe_makes_a_bundle_of_the_folders_classes_and_resumes(tiny_data, tmp_path, capfd):
    out, bundle = tmp_path / "run", tmp_path / "bundles" / "my-model"
    argv = ["--data", str(tiny_data), "--out", str(out), "--recipe", "full"]
    argv += ["--bundle-out", str(bundle), *TEACHER, *STUDENT, *OTHERS]
    assert main(argv) == 0
    err = capfd.readouterr().err
    for i, stage in enumerate(STAGES, 1):
        assert f"[recipe] {i}/{len(STAGES)} {stage}: start" in err
        assert re.search(
            rf"\[recipe\] {i}/{len(STAGES)} {stage}: done in \S+ \(\S+ of CPU\), .* ETA \S+ for the",
            err,
        )
        assert (out / stage / "recipe.json").is_file()
    # The ETA is refined after each training epoch.
    assert re.search(r"\[recipe\] 1/6 teacher: epoch 1/1, \S+ elapsed, ETA \S+ for the", err)

    manifest = load_manifest(bundle)
    assert [c.id for c in manifest.classes] == sorted(
        p.name for p in (tiny_data / "train").iterdir()
    )
    assert manifest.name == "my-model"
    assert "encoder_int8" in manifest.files and (bundle / "encoder.int8.onnx").is_file()
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "spic-card --bundle" in card and "spic-int8" in card
    # Its head answers "unknown" below a threshold that accepts 95% of its val frames.
    assert manifest.head is not None and manifest.head.reject is not None
    assert manifest.head.reject.score == "knn" and manifest.head.reject.bank in manifest.files
    assert "## Unknown" in card and "Reject rule `knn`" in card
    rows = load_card(bundle / "eval.json")["rows"]
    assert any("INT8" in r["classifier"] for r in rows)
    # The student started from the teacher's bundle, which also taught it.
    student = json.loads((out / "student" / "config.json").read_text())
    assert student["teacher"] == student["init_from"] == str(out / "teacher" / "bundle")

    # The same command again: every stage is complete, nothing reruns, the bundle stays.
    mtime = (bundle / "manifest.json").stat().st_mtime_ns
    assert main(argv) == 0
    err = capfd.readouterr().err
    for i, stage in enumerate(STAGES, 1):
        assert f"[recipe] {i}/{len(STAGES)} {stage}: complete in {out / stage}, skipped" in err
    assert ": start" not in err and "already this bundle" in err
    assert (bundle / "manifest.json").stat().st_mtime_ns == mtime

    # A stage without its completion record runs again, after the ones complete are skipped.
    (out / "card" / "recipe.json").unlink()
    assert main(argv) == 0
    err = capfd.readouterr().err
    assert (
        f"5/6 unknown: complete in {out / 'unknown'}, skipped" in err and "6/6 card: start" in err
    )
    assert load_manifest(bundle).model_id == manifest.model_id

    # A training stage cut short (its checkpoint there, no completion record, as after Ctrl-C)
    # continues from its checkpoint, with the settings it was started with.
    recipe = Recipe(parse_args(argv))
    (out / "student" / "recipe.json").unlink()
    resumed = recipe.prepare(recipe.stages[1])
    assert "--resume" in resumed and "--set" not in resumed and "--config" not in resumed


def test_stage_settings_become_flags_and_durations_read_well():
    assert as_flags(["size=64", "no-progress=true"]) == ["--size", "64", "--no-progress"]
    assert [duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]
