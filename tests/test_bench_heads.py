"""bench/heads.py's summary: rows merged per (set, method, share), header kept honest."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

from bench.heads import save


def _args(out: Path, reference: str | None) -> argparse.Namespace:
    return argparse.Namespace(
        argv=["--kinds", "linear"],
        out=out,
        codec=Path("models/bundles/spic-imagenette"),
        reference=Path(reference) if reference else None,
        threads=1,
    )


def _row(method: str, top1: float) -> dict:
    return {"dataset": "signs", "share": 1.0, "method": method, "top1": top1}


def test_a_run_without_the_pixel_baseline_keeps_its_rows_and_their_reference(tmp_path: Path):
    out, codec = tmp_path / "heads.json", SimpleNamespace(model_id="4257331cc53ce176")
    save(
        _args(out, "/refs/reference-imagenette-ema"), codec, _row("pixel reference fine-tune", 0.7)
    )
    save(_args(out, "/refs/reference-imagenette-ema"), codec, _row("spic-head linear", 0.5))
    save(_args(out, None), codec, _row("spic-head linear", 0.4))  # --no-pixel, the linear row again

    summary = json.loads(out.read_text())
    assert summary["reference"] == "/refs/reference-imagenette-ema"
    by_method = {r["method"]: r["top1"] for r in summary["rows"]}
    assert by_method == {"pixel reference fine-tune": 0.7, "spic-head linear": 0.4}
