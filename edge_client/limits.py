"""The largest whole image worth encoding: what the cloud serves for this bundle (``/v1/models``),
else what the bundle itself says (its manifest's ``limits``, else the defaults).

Asked before the first image is encoded, so an image the cloud would refuse with 413 is refused
on the camera instead, where it costs nothing and says why.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pydantic import ValidationError

from edge_client.errors import UploadError
from shared.manifest import ServingLimits

log = logging.getLogger("spic.edge.limits")


def learn_limits(encoder: Any, client: Any) -> bool:
    """Set ``encoder.limits`` to the cloud's for its model, or to the bundle's if the cloud cannot
    say (down, another version, not serving this model); False when the cloud did not answer."""
    encoder.limits = encoder.bundle_limits
    source = "the bundle's"
    try:
        models = client.models()
    except UploadError as exc:
        log.info("cloud limits unknown (%s); using the bundle's", exc)
        return False
    served = {m.get("model_id"): m for m in models if isinstance(m, dict)}
    info = served.get(encoder.model_id)
    if info is None:
        print(
            f"spic-edge: warning: the cloud does not serve model {encoder.model_id} "
            f"(it serves {', '.join(map(str, served)) or 'none'}): its frames will be refused",
            file=sys.stderr,
        )
    else:
        try:
            encoder.limits = ServingLimits(**info.get("limits", {}))
            source = "the cloud's"
        except (TypeError, ValidationError):
            log.info("cloud sent unreadable limits %r; using the bundle's", info.get("limits"))
    if encoder.spec.get("mode") == "whole":
        lim = encoder.limits
        print(
            f"spic-edge: whole images up to {lim.max_input_pixels} px, {lim.max_input_side} per "
            f"side ({source} limits)",
            file=sys.stderr,
        )
    return True
