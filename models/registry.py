"""A timm-style registry: every network in ``models`` is a named factory of a kind.

    kind "spic"       SPIC autoencoders with a latent classifier (spic-train)
    kind "reference"  pixel-domain classifiers that read decoded images (spic-train-reference)

This module only records what registers itself; ``models.zoo`` imports every family and is what
callers use, so neither side imports the other (no cycle).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["spic", "reference"]


@dataclass(frozen=True)
class Entry:
    name: str
    kind: Kind
    factory: Callable[..., Any]


REGISTRY: dict[str, Entry] = {}


def register_model(*, kind: Kind) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a factory under its name with underscores as dashes (``spic_s16`` -> ``spic-s16``)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        name = fn.__name__.replace("_", "-")
        if name in REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        REGISTRY[name] = Entry(name, kind, fn)
        return fn

    return register
