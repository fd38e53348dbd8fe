"""make e2e-compose: the happy-path scenario through a real Docker engine.

Expects `docker compose up --build -d` to have started the stack (the Makefile does). Drops the
scikit-image photos into ./frames and waits until the edge has printed a prediction for each.
This machine's CI has no Docker engine; the process-based tests (tests/test_e2e.py) run there.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evaluation.samples import SAMPLE_PHOTOS, sample_images  # noqa: E402


def main() -> int:
    frames = ROOT / "frames"
    frames.mkdir(exist_ok=True)
    for name, im in zip(SAMPLE_PHOTOS, sample_images(None), strict=True):
        im.save(frames / f"{name}.png")
    deadline = time.time() + 180
    while time.time() < deadline:
        logs = subprocess.run(
            ["docker", "compose", "logs", "edge"], capture_output=True, text=True, cwd=ROOT
        ).stdout
        seen = [n for n in SAMPLE_PHOTOS if f"{n}.png:" in logs]
        if len(seen) == len(SAMPLE_PHOTOS):
            print(f"e2e-compose: all {len(seen)} frames classified")
            return 0
        time.sleep(2)
    print(
        f"e2e-compose: only {len(seen)} of {len(SAMPLE_PHOTOS)} frames classified", file=sys.stderr
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
