from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.spic"))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.inspect_cli", *args], capture_output=True, text=True
    )


def test_prints_one_json_header_per_frame():
    out = run(*map(str, GOLDEN))
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["codec"] for r in rows] == ["huffman", "rans"]
    for r, path in zip(rows, GOLDEN, strict=True):
        assert r["total_bytes"] == path.stat().st_size
        assert r["bpp"] == round(8 * path.stat().st_size / (80 * 48), 6)
        assert {
            "qf",
            "model_id",
            "latent_shape",
            "image_size",
            "payload_bytes",
            "version",
        } <= r.keys()


def test_truncated_and_flipped_frames_exit_2_with_one_line(tmp_path):
    data = GOLDEN[0].read_bytes()
    short = tmp_path / "short.spic"
    short.write_bytes(data[:-5])
    flipped = tmp_path / "flipped.spic"
    flipped.write_bytes(data[:40] + bytes([data[40] ^ 0x10]) + data[41:])
    for path, reason in ((short, "truncated"), (flipped, "crc_mismatch")):
        out = run(str(path))
        assert out.returncode == 2
        assert out.stdout == ""
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and reason in lines[0]


def test_missing_file_is_one_line_too(tmp_path):
    out = run(str(tmp_path / "nope.spic"))
    assert out.returncode == 2 and "nope.spic" in out.stderr and "Traceback" not in out.stderr
