"""Every registered network, SPIC and reference alike: ``list_models`` and ``create_model``, and
the networks a checkpoint describes: ``load_checkpoint`` and ``load_reference``.

Tests iterate over ``list_models()``, so a newly registered architecture is exercised (forward,
shapes, ONNX export, torch/onnxruntime parity) without anyone remembering to add it to a test.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from models import network, reference  # noqa: F401  (importing a family registers it)
from models.data import TRAIN_DATA_HELP
from models.ema import final_weights
from models.network import SPIC, SPICConfig
from models.reference import ResNet, ResNetConfig
from models.registry import REGISTRY, Kind
from models.trainer import load_checkpoint_file


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


def load_checkpoint(path: str | Path) -> tuple[SPIC, dict]:
    """Rebuild the SPIC model a spic-train checkpoint describes (used by export and evaluation)."""
    ckpt = load_checkpoint_file(path)
    model = SPIC(SPICConfig.from_dict(ckpt["config"]["arch"]))
    model.load_state_dict(final_weights(ckpt))
    model.eval()
    return model, ckpt


def load_reference(ckpt: dict) -> ResNet:
    """The reference classifier a spic-train-reference checkpoint stands for (its final weights)."""
    model = ResNet(ResNetConfig.from_dict(ckpt["arch"]))
    model.load_state_dict(final_weights(ckpt))
    return model


def probe_parser(description: str) -> argparse.ArgumentParser:
    """The command line every research probe (``scripts/*_probe.py``) starts from: a spic-train
    checkpoint and ``--data``."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("checkpoint", help="a spic-train checkpoint.pt")
    ap.add_argument("--data", type=Path, required=True, help=TRAIN_DATA_HELP)
    return ap
