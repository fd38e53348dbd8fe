"""Where the shipped model bundles live: the one place that names the default bundle."""

from __future__ import annotations

from pathlib import Path

BUNDLES_DIR = Path(__file__).resolve().parent.parent / "models" / "bundles"
# What make demo, spic-edge, spic-cloud and the compose images use unless told otherwise.
DEFAULT_BUNDLE = BUNDLES_DIR / "spic-imagenette"
