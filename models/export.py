"""spic-export CHECKPOINT --out BUNDLE_DIR --data TRAIN_DIR: a deployable model bundle.

Writes ``encoder.onnx``, ``decoder.onnx`` and ``classifier.onnx`` (dynamic batch and spatial
sizes), ``manifest.json`` (see ``shared.manifest``) and ``MODEL_CARD.md``. Only the conv nets go
to ONNX; entropy coding stays outside the graph.

The per-channel frequency tables are measured on training images, prepared exactly as the camera
prepares them and encoded by the exported ``encoder.onnx`` itself, so the tables describe what
deployed encoders emit. Every count gets +1 (Laplace smoothing) so that no in-range symbol has to
be escaped; on ~1.8 M latent values per channel that costs nothing measurable.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import warnings
from pathlib import Path
from typing import cast

import numpy as np
import onnxruntime as ort
import torch

from models.data import DATA_HELP, WNID_NAMES, eval_arrays, split_folder
from models.enhancement import EnhancementDecoder, EnhancementEncoder, KLTEnhancement, fit_klt
from models.model_card import write_card
from models.network import SPIC, count_conv_macs
from models.zoo import load_checkpoint
from shared.manifest import (
    BundleFile,
    ClassInfo,
    Enhancement,
    LatentRule,
    Manifest,
    Preprocessing,
    write_manifest,
)
from shared.preprocess import batch_input
from shared.quantize import quantize

OPSET = 17
FILES = {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "classifier": "classifier.onnx"}
# An enhancement layer's two graphs (models/enhancement.py), by role; each file is ROLE.onnx.
ENHANCEMENT_ROLES = ("enhancement_encoder", "enhanced_decoder")


class ClassifierWithFeatures(torch.nn.Module):
    """h_c with a second output, ``features``: its penultimate block's activations max-pooled
    over space, what a head's ``knn`` reject rule compares (shared/reject.py). Measured on the
    shipped head, they separate foreign photos better than the last block's or the logits
    (docs/research/unknown.md)."""

    def __init__(self, h_c: torch.nn.Module):
        super().__init__()
        self.h_c = h_c

    def forward(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        blocks = list(cast(torch.nn.Sequential, self.h_c.features))
        head = cast(torch.nn.Module, self.h_c.head)
        x = y_hat
        for block in blocks[:-1]:
            x = block(x)
        features = torch.amax(x, dim=(2, 3))
        return head(blocks[-1](x)), features


def networks(
    model: SPIC, enhancement: KLTEnhancement | None
) -> dict[str, tuple[torch.nn.Module, str, str]]:
    """The bundle's graphs by role, with their input and output names: the three of SPIC, and an
    enhancement layer's two, which read only the image or the layer's own channels."""
    graphs: dict[str, tuple[torch.nn.Module, str, str]] = {
        "encoder": (model.g_a, "image", "latent"),
        "decoder": (model.g_s, "latent", "image"),
        "classifier": (ClassifierWithFeatures(model.h_c), "latent", "logits,features"),
    }
    if enhancement is not None:
        encoder, decoder = ENHANCEMENT_ROLES
        graphs[encoder] = (EnhancementEncoder(enhancement), "image", "latent")
        graphs[decoder] = (EnhancementDecoder(enhancement), "latent", "image")
    return graphs


def export_onnx(model: SPIC, out: Path, enhancement: KLTEnhancement | None = None) -> dict:
    """Export the bundle's graphs with dynamic batch and spatial axes; returns their files."""
    model = model.eval().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # the stubs lack memory_format
    s, probe = model.cfg.stride, 64
    x = torch.rand(2, 3, probe, probe)
    files = {}
    for role, (module, in_name, out_name) in networks(model, enhancement).items():
        files[role] = FILES.get(role, f"{role}.onnx")
        c = model.cfg.latent_channels
        if role == ENHANCEMENT_ROLES[1]:
            c = enhancement.analysis.out_channels  # type: ignore[union-attr]
        arg = x if in_name == "image" else torch.rand(2, c, probe // s, probe // s)
        outs = out_name.split(",")
        out_axes = {0: "batch"} if role == "classifier" else {0: "batch", 2: "height", 3: "width"}
        # The TorchScript exporter (dynamo=False) needs no onnxscript and handles plain conv nets;
        # torch marks it deprecated, which is noise here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (arg,),
                str(out / files[role]),
                input_names=[in_name],
                output_names=outs,
                dynamic_axes={in_name: {0: "batch", 2: "height", 3: "width"}}
                | {o: out_axes for o in outs},
                opset_version=OPSET,
                dynamo=False,
            )
    return files


def latent_stats(model: SPIC, images: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of ``g_a``'s latent over ``images``."""
    total = total_sq = None
    count = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            y = model.g_a(torch.from_numpy(batch_input(images[i : i + batch]))).double()
            s, s2 = y.sum(dim=(0, 2, 3)), (y * y).sum(dim=(0, 2, 3))
            total, total_sq = (s, s2) if total is None else (total + s, total_sq + s2)
            count += y.shape[0] * y.shape[2] * y.shape[3]
    assert total is not None and total_sq is not None, "no images"
    mean = total / count
    std = (total_sq / count - mean * mean).clamp(min=0).sqrt()
    return mean.numpy(), std.numpy()


def pin_idle_channels(model: SPIC, images: np.ndarray, max_std: float) -> list[int]:
    """Pin every latent channel whose standard deviation over ``images`` is below ``max_std`` to
    its mean (``Encoder.pin_channels``); returns the pinned channels."""
    mean, std = latent_stats(model.eval(), images)
    idle = np.flatnonzero(std < max_std)
    if len(idle):
        model.g_a.pin_channels(torch.from_numpy(idle), torch.from_numpy(mean[idle]).float())
    return idle.tolist()


def measure_tables(
    encoder_path: Path,
    images: np.ndarray,
    qfs,
    enhancement: tuple[Path, Enhancement] | None = None,
    batch: int = 64,
) -> dict[str, list[list[int]]]:
    """Per-channel symbol counts of the exported encoder's latents at each QF, plus one over the
    symbols a channel can take. With an enhancement layer (its graph and its rule), the layer's
    channels follow from its QF up, and the base's rows count symbols at the base's own QF (zero
    past it: those symbols never occur)."""
    session = ort.InferenceSession(str(encoder_path), providers=["CPUExecutionProvider"])
    extra, rule = None, None
    if enhancement is not None:
        extra = ort.InferenceSession(str(enhancement[0]), providers=["CPUExecutionProvider"])
        rule = enhancement[1]
    counts: dict[int, np.ndarray] = {}
    levels: dict[int, list[int]] = {}  # per QF, each row's alphabet size
    for i in range(0, len(images), batch):
        x = batch_input(images[i : i + batch])
        base = session.run(None, {"image": x})[0]
        layer = None if extra is None else extra.run(None, {"image": x})[0]
        for q in qfs:
            groups = [(base, q if rule is None else rule.base_qf_at(q))]
            if rule is not None and layer is not None and rule.on(q):
                groups.append((layer, q))
            if q not in counts:
                levels[q] = [g + 1 for y, g in groups for _ in range(y.shape[1])]
                counts[q] = np.zeros((len(levels[q]), q + 1), dtype=np.int64)
            row = 0
            for y, g in groups:
                sym = quantize(y, g).transpose(1, 0, 2, 3).reshape(y.shape[1], -1)
                for ch in range(y.shape[1]):
                    counts[q][row] += np.bincount(sym[ch], minlength=q + 1)
                    row += 1
    for q, table in counts.items():
        for row, n in enumerate(levels[q]):
            table[row, :n] += 1
    return {str(q): counts[q].tolist() for q in qfs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="spic-export", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument(
        "--data", required=True, help=DATA_HELP.format(split="train") + "; tables measured on it"
    )
    p.add_argument("--name", help="bundle name (default: the output folder's name)")
    p.add_argument("--default-qf", type=int, default=48)
    p.add_argument("--size", type=int, default=224, help="center-crop size the camera uses")
    p.add_argument("--table-limit", type=int, help="measure tables on a seeded subset of images")
    p.add_argument(
        "--pin-idle",
        type=float,
        metavar="STD",
        help="pin latent channels whose std on the table images is below STD to their mean",
    )
    p.add_argument(
        "--enhance-channels",
        type=int,
        metavar="M",
        help="add an enhancement layer of M channels for reconstruction (models/enhancement.py)",
    )
    p.add_argument(
        "--enhance-from-qf", type=int, help="the lowest QF that sends the enhancement layer"
    )
    p.add_argument(
        "--enhance-base-qf",
        type=int,
        help="with the layer on, quantize the base latent at no finer than this QF",
    )
    p.add_argument(
        "--enhance-fit-images",
        type=int,
        default=1000,
        help="seeded subset of the table images the layer's transform is fitted on",
    )
    args = p.parse_args(argv)
    if (args.enhance_channels is None) != (args.enhance_from_qf is None):
        p.error("--enhance-channels and --enhance-from-qf go together")

    model, ckpt = load_checkpoint(args.checkpoint)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, _, _ = eval_arrays(split_folder(args.data, "train"), args.size, args.table_limit)
    pinned = None if args.pin_idle is None else pin_idle_channels(model, images, args.pin_idle)
    klt, layer = None, None
    if args.enhance_channels is not None:
        fit = np.random.default_rng(0).permutation(len(images))[: args.enhance_fit_images]
        klt = KLTEnhancement(
            *fit_klt(images[np.sort(fit)], args.enhance_channels, model.cfg.stride)
        )
        encoder, decoder = ENHANCEMENT_ROLES
        layer = Enhancement(
            channels=args.enhance_channels,
            from_qf=args.enhance_from_qf,
            base_qf=args.enhance_base_qf,
            encoder=encoder,
            decoder=decoder,
        )
    files = export_onnx(model, out, klt)
    qfs = list(ckpt["config"]["train"]["qfs"])
    graph = None if layer is None else (out / files[layer.encoder], layer)
    tables = measure_tables(out / FILES["encoder"], images, qfs, graph)
    manifest = Manifest(
        name=args.name or out.name,
        architecture=ckpt["config"]["model"],
        architecture_config=model.cfg.to_dict(),
        classes=[
            ClassInfo(index=i, id=c, name=WNID_NAMES.get(c, c))
            for i, c in enumerate(ckpt["classes"])
        ],
        preprocessing=Preprocessing(mode="center_crop", resize_short=args.size, size=args.size),
        latent=LatentRule(channels=model.cfg.latent_channels, stride=model.cfg.stride),
        qfs=qfs,
        default_qf=args.default_qf,
        tables=tables,
        files={role: BundleFile(path=name, sha256="") for role, name in files.items()},
        enhancement=layer,
    )
    manifest = write_manifest(out, manifest)
    command = "spic-export " + shlex.join(sys.argv[1:] if argv is None else argv)
    recorded = ckpt.get("commands")
    train_command = (
        "\n".join(recorded)
        if recorded
        else "# the training command was not recorded in this checkpoint; its config is below"
    )
    graphs = networks(model, klt)
    # The camera's cost at its most expensive QF: the base encoder and the layer's graph.
    camera = [graphs[r][0] for r in ("encoder", *([layer.encoder] if layer else []))]
    macs = sum(count_conv_macs(m) for m in camera)
    write_card(out, manifest, ckpt, macs, command, train_command, pinned)
    print(
        json.dumps(
            {"bundle": str(out), "model_id": manifest.model_id, "qfs": qfs, "pinned": pinned}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
