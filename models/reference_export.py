"""Writing a reference bundle: the ONNX classifier (checked against torch), its manifest and card."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from models.data import WNID_NAMES
from models.reference import ResNet
from models.reference_bundle import ONNX_FILE, FineTune, ReferenceManifest, write_reference_manifest
from shared.manifest import BundleFile, ClassInfo, Preprocessing


def export_bundle(
    model: ResNet,
    out: Path,
    name: str,
    architecture: str,
    label: str,
    classes: list[str],
    size: int,
    finetune: FineTune | None,
    val_top1: float,
    card: str,
) -> ReferenceManifest:
    """classifier.onnx (dynamic batch and size), checked against torch, plus manifest and card."""
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval().to(memory_format=torch.contiguous_format).cpu()  # type: ignore[call-overload]  # the stubs lack memory_format
    x = torch.rand(2, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (x,),
            str(out / ONNX_FILE),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    probe = torch.rand(3, 3, size, size)
    onnx_out = ort.InferenceSession(str(out / ONNX_FILE)).run(None, {"image": probe.numpy()})[0]
    with torch.no_grad():
        err = float(np.abs(onnx_out - model(probe).numpy()).max())
    if err > 1e-3:
        raise RuntimeError(f"exported classifier differs from torch by {err}")
    manifest = ReferenceManifest(
        name=name,
        label=label,
        architecture=architecture,
        architecture_config=model.cfg.to_dict(),
        classes=[
            ClassInfo(index=i, id=c, name=WNID_NAMES.get(c, c)) for i, c in enumerate(classes)
        ],
        preprocessing=Preprocessing(mode="center_crop", resize_short=size, size=size),
        finetune=finetune,
        val_top1=val_top1,
        files={"classifier": BundleFile(path=ONNX_FILE, sha256="")},
    )
    manifest = write_reference_manifest(out, manifest)
    (out / "MODEL_CARD.md").write_text(card.replace("{model_id}", manifest.model_id))
    return manifest


def reference_card(cfg, finetune, summary, command, steps, n_val) -> str:
    what = (
        f"Fine-tuned for {cfg.finetune_epochs} epochs from reference `{finetune.base_model_id}` on "
        f"train images decoded by {', '.join(f'{c.upper()} q{q}' for c, q in finetune.qualities.items())}: "
        f"the qualities whose mean rate matches SPIC's {finetune.target_bpp:.4f} bits per pixel "
        f"({finetune.target_from}, on {cfg.calibration_images} train images), or the codec's "
        "lowest quality where it cannot go that low."
        if finetune
        else f"Trained from scratch for {cfg.epochs} epochs on clean train images."
    )
    rows = "\n".join(f"| {k} | {100 * v:.2f}% |" for k, v in summary.items())
    return f"""# Reference classifier: model id `{{model_id}}`

A pixel-domain CNN of the ResNet family (`{cfg.model}`, see `models/reference.py`), the
stand-in for the paper's ResNet50 and VGG19 columns in `spic-eval`. Input: float32 (N, 3, H, W)
in [0, 1], 224² center crops; normalisation is inside the graph. {what} {steps} steps in all.

## How it was made

```bash
{command}
```

## Validation top-1 ({n_val} images, 224² center crops)

| images | top-1 |
|---|---|
{rows}

Config:

```json
{json.dumps(cfg.to_dict(), indent=1)}
```
"""
