"""What spic-edge prints for a prediction: one human line, or one JSON object."""

from __future__ import annotations

import json
from typing import Any


def prediction_line(source: str, result: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps({"image": source, **result})
    return (
        f"{source}: {result['label']} ({100 * result['confidence']:.1f}%)  {result['bytes']} B  "
        f"{result['bpp']:.4f} bpp  QF {result['qf']}  request {result['request_id']}"
    )
