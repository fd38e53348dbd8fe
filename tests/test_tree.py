"""The tracked tree fits one upload to a GPU machine together with its training data (issue 33):
at most 40 MiB of tracked files, so `make gpu-pack`'s 24 MiB of data and the tree stay under the
64 MiB a device call carries. A new default bundle must retire an old one (`make old-codecs`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 40 << 20


def test_tracked_files_fit_in_40_mib() -> None:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = [ROOT / name for name in listed.decode().split("\0") if name]
    total = sum(f.stat().st_size for f in files if f.is_file())
    largest = sorted(files, key=lambda f: f.stat().st_size if f.is_file() else 0)[-5:]
    assert total <= LIMIT, f"{total} bytes tracked; largest: {[str(f) for f in largest]}"
