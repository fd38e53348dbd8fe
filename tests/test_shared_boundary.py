"""shared/ is the contract both sides install: numpy, pydantic and constriction, Pillow for
``shared.preprocess`` alone (how pixels become the encoder's input is part of the contract: the
camera, training and evaluation must prepare them identically), and onnxruntime for the codec
runtime both sides open (``shared.runtime``, its sessions and heads) alone."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import shared

# constriction is the pinned rANS coder (pyproject.toml); pydantic brings its own two helpers.
ALLOWED = {
    "numpy",
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_extensions",
    "typing_inspection",
    "constriction",
    "shared",
    "PIL",
    "onnxruntime",
}
PIL_USERS = {"shared.preprocess"}
ORT_USERS = {"shared.onnx_session"}  # runtime and heads open graphs through it


def test_shared_imports_nothing_else():
    modules = [m.name for m in pkgutil.walk_packages(shared.__path__, "shared.")]
    assert "shared.bitstream" in modules and "shared.codecs.rans" in modules
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(shared.__file__).parent.parent,
    )
    top = set(json.loads(out.stdout)) - set(sys.stdlib_module_names) - {"_distutils_hack"}
    top = {m for m in top if not m.startswith("_")}
    assert top <= ALLOWED, f"shared/ pulled in {sorted(top - ALLOWED)}"


def test_only_preprocess_uses_pillow():
    import ast

    root = Path(shared.__file__).parent
    for path in root.rglob("*.py"):
        module = "shared." + ".".join(path.relative_to(root).with_suffix("").parts)
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        if any(n.split(".")[0] == "PIL" for n in names):
            assert module in PIL_USERS, f"{module} imports Pillow"
        if any(n.split(".")[0] == "onnxruntime" for n in names):
            assert module in ORT_USERS | {"shared.runtime"}, f"{module} imports onnxruntime"
