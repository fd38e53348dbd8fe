"""Where the shipped model bundles live: the one place that names the default bundle."""

from __future__ import annotations

import json
from pathlib import Path

BUNDLES_DIR = Path(__file__).resolve().parent.parent / "models" / "bundles"
# What make demo, spic-edge, spic-cloud and the compose images use unless told otherwise.
DEFAULT_BUNDLE = BUNDLES_DIR / "spic-imagenette"


def shipped_bundles() -> list[Path]:
    """Every SPIC bundle shipped under ``BUNDLES_DIR`` (reference classifiers are not SPIC
    bundles), sorted by name: what the cloud serves unless told otherwise, so a frame from a
    camera still running an older bundle is classified after the default changes."""
    return bundles_in(BUNDLES_DIR)


def bundles_in(folder: Path) -> list[Path]:
    """Every SPIC bundle folder directly inside ``folder``, sorted by name."""
    found = []
    for manifest in sorted(folder.glob("*/manifest.json")):
        try:
            if json.loads(manifest.read_text()).get("format") == "spic-bundle":
                found.append(manifest.parent)
        except (OSError, ValueError):
            continue  # not a bundle this release can read; naming it explicitly says why
    return found
