"""Every registered network, SPIC and reference alike: ``list_models`` and ``create_model``.

Tests iterate over ``list_models()``, so a newly registered architecture is exercised (forward,
shapes, ONNX export, torch/onnxruntime parity) without anyone remembering to add it to a test.
"""

from __future__ import annotations

from typing import Any

from models import network, reference  # noqa: F401  (importing a family registers it)
from models.registry import REGISTRY, Kind


def list_models(kind: Kind | None = None) -> list[str]:
    return sorted(name for name, e in REGISTRY.items() if kind is None or e.kind == kind)


def create_model(name: str, kind: Kind | None = None, **kwargs: Any) -> Any:
    """Build a registered network; ``kind`` (when given) must match, so a ResNet is never a SPIC."""
    entry = REGISTRY.get(name)
    if entry is None or (kind is not None and entry.kind != kind):
        known = ", ".join(list_models(kind))
        raise KeyError(
            f"unknown {kind or ''} model {name!r}; registered: {known}".replace("  ", " ")
        )
    return entry.factory(**kwargs)


def display_name(name: str) -> str:
    """How reports write a registered name: ``resnet18-half`` -> ``ResNet18-half``."""
    return "ResNet" + name.removeprefix("resnet") if name.startswith("resnet") else name
