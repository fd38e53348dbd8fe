"""What spic-edge prints for a prediction: one human line, or one JSON object."""

from __future__ import annotations

import json
from typing import Any


def prediction_line(source: str, result: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps({"image": source, **result})
    # A frame the cloud's head refused has no label: it says so, with its best guess.
    label = result.get("label")
    if label is None and result.get("unknown"):
        best = (result.get("top_k") or [{}])[0].get("label", "?")
        label = f"unknown (closest: {best})"
    return (
        f"{source}: {label} ({100 * result['confidence']:.1f}%)  {result['bytes']} B  "
        f"{result['bpp']:.4f} bpp  QF {result['qf']}  request {result['request_id']}"
    )
