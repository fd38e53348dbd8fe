"""A small timm-style registry: every SPIC architecture is a named factory.

Tests iterate over ``list_models()``, so a newly registered architecture is exercised (forward,
shapes, ONNX export, torch/onnxruntime parity) without anyone remembering to add it to a test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register ``fn`` under its name with underscores turned into dashes (``spic_s16`` -> ``spic-s16``)."""
    name = fn.__name__.replace("_", "-")
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} registered twice")
    _REGISTRY[name] = fn
    return fn


def list_models() -> list[str]:
    # Importing the network module fills the registry; done lazily so the registry has no cycle.
    from models import network  # noqa: F401

    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> Any:
    list_models()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        ) from None
    return factory(**kwargs)
