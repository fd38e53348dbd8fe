"""make gpu-pack (scripts/gpu_pack.py): one zip the training loader reads once unpacked."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from models.data import InMemoryImages, data_provenance, eval_arrays, split_folder
from scripts.gpu_pack import DATA_DIR, main, teachers
from tests.conftest import TINY_CLASSES, make_image_folder


def test_the_pack_unpacks_to_a_dataset_the_training_loader_reads(tmp_path, capsys):
    data = make_image_folder(tmp_path / "src", per_class=3, size=(120, 100))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"epochs": 1}))  # no teacher: the images alone
    out = tmp_path / "pack"
    args = ["--data", str(data), "--out", str(out), "--config", str(config)]
    assert main([*args, "--short-side", "48", "--val-limit", "4"]) == 0
    said = capsys.readouterr().out
    assert "48-px short side" in said and f"spic-train --data {DATA_DIR}" in said
    assert "--device cuda" in said
    with zipfile.ZipFile(out / "data.zip") as z:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
        z.extractall(tmp_path / "far")
    root = tmp_path / "far" / DATA_DIR
    train = InMemoryImages(split_folder(root, "train"), 48, threads=1)
    assert len(train) == 6 and train.classes == list(TINY_CLASSES)
    assert min(train.images[0].size) == 48 and train.paths[0].suffix == ".webp"
    images, labels, _ = eval_arrays(split_folder(root, "val"), 64)
    assert images.shape == (4, 64, 64, 3) and len(labels) == 4
    assert "WebP" in data_provenance(root) and "gpu_pack.py" in data_provenance(root)


def test_the_pack_over_its_budget_fails(tmp_path):
    data = make_image_folder(tmp_path / "src", per_class=2)
    config = tmp_path / "config.json"
    config.write_text("{}")
    args = ["--data", str(data), "--out", str(tmp_path / "pack"), "--config", str(config)]
    assert main([*args, "--val-limit", "2", "--budget-mib", "0.001"]) == 1


def test_the_default_recipe_packs_its_teacher():
    # It left the tree; the pack carries it where the config names it.
    config = Path(__file__).resolve().parent.parent / "models/configs/spic-split-s16-base-qfs.json"
    assert teachers(config) == [Path("models/bundles/reference-imagenette-ema")]
