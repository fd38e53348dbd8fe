"""Install-time promises: scripts say which extra they need; installs carry no evaluation-only
bundles; the build has no deprecated metadata."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in {blocked!r}:\n"
    "            raise ModuleNotFoundError(f'No module named {{name!r}}', name=name)\n"
    "sys.meta_path.insert(0, Block())\n"
    "sys.argv = [{prog!r}, '--help']\n"
    "from shared import entrypoints\n"
    "raise SystemExit(entrypoints.{func}())\n"
)


@pytest.mark.parametrize(
    "prog, blocked, extra",
    [
        ("spic-cloud", {"uvicorn", "fastapi"}, "cloud"),
        ("spic-train", {"torch"}, "train"),
        ("spic-head", {"torch"}, "train"),
        ("spic-edge", {"onnxruntime", "httpx"}, "edge"),
    ],
)
def test_a_script_without_its_extra_says_which_to_install(prog, blocked, extra):
    code = BLOCK.format(blocked=blocked, prog=prog, func=prog.replace("-", "_"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and f"pip install 'spic[{extra}]'" in out.stderr


def test_every_script_is_guarded_and_reference_bundles_stay_out_of_installs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts = project["project"]["scripts"]
    assert len(scripts) == 11 and all(v.startswith("shared.entrypoints:") for v in scripts.values())
    from shared import entrypoints

    assert all(callable(getattr(entrypoints, v.split(":")[1])) for v in scripts.values())
    assert isinstance(project["project"]["license"], str)  # SPDX string: no deprecation warning


def test_the_wheel_carries_the_spic_bundles_and_no_reference_bundle(tmp_path):
    """What an image or a pip install really gets (the wheel docker/*.Dockerfile install)."""
    import shutil
    import zipfile

    source = tmp_path / "src"  # a copy, so no stale build/ folder of the checkout leaks in
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "runs", "*.egg-info", "__pycache__"
        ),
    )
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("spic-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "models/bundles/spic-imagenette/encoder.onnx" in names
    assert "cloud_service/dashboard/index.html" in names
    assert not [n for n in names if "/reference-" in n]
