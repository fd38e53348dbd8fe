"""shared/ is the contract both sides install: it may import numpy, pydantic and constriction only."""

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
}


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
