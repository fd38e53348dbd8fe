"""``--data`` means one thing in every command: a dataset root with train/ and val/ (issue 34,
item 11). Each command reads the split it needs; a split folder given directly still works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from models.data import split_folder

COMMANDS = {
    "evaluation.card": "val",
    "evaluation.cli": "val",
    "models.export": "train",
    "models.int8": "train",
    "models.train": "train and val",
    "models.train_reference": "train and val",
}


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_every_data_flag_is_a_dataset_root(module: str) -> None:
    code = f"import sys, {module} as m; sys.argv = ['x', '--help']; m.main()"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    ).stdout
    flat = " ".join(out.split())
    assert "dataset root holding train/<class>/ and val/<class>/" in flat, flat
    assert f"(the {COMMANDS[module]} split is read" in flat, flat


def test_split_folder_takes_a_root_or_a_split(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a").mkdir(parents=True)
    assert split_folder(tmp_path, "val") == tmp_path / "val"
    assert split_folder(tmp_path / "train", "train") == tmp_path / "train"
    assert split_folder(tmp_path / "val", "train") == tmp_path / "val"  # a split given directly
