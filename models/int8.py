"""spic-int8 BUNDLE --data TRAIN_DIR: add a static-INT8 (QDQ) encoder to a bundle.

ONNX Runtime's static quantization with QDQ nodes, calibrated on training images prepared as the
camera prepares them (the recipe ONNX Runtime recommends for CNNs: ``quant_pre_process`` then
``quantize_static``, per-channel weights). The last conv and the sigmoid stay in float: the
latent is quantized again by QF up to 128 levels, and an 8-bit latent would flip symbols.

Writes ``encoder.int8.onnx`` and adds it to the manifest as the ``encoder_int8`` role (this
changes the model id, so run it before the bundle is published). The edge uses it with
``spic-edge --int8``; ``bench/edge_latency.py`` measures its speed-up and ``spic-card --int8`` its
cost in top-1.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from models.data import DATA_HELP, eval_arrays, split_folder
from shared.manifest import BundleFile, load_manifest, write_manifest

INT8_FILE = "encoder.int8.onnx"


class ImageReader(CalibrationDataReader):
    def __init__(self, images: np.ndarray, batch: int = 16):
        self.batches = iter([images[i : i + batch] for i in range(0, len(images), batch)])

    def get_next(self):
        b = next(self.batches, None)
        if b is None:
            return None
        return {"image": b.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)}


def float_tail_nodes(model: onnx.ModelProto) -> list[str]:
    """The last Conv and everything after it (the sigmoid): kept in float."""
    convs = [i for i, n in enumerate(model.graph.node) if n.op_type == "Conv"]
    return [n.name for n in model.graph.node[convs[-1] :]]


def make_int8(bundle: Path, data: str | Path, n_images: int = 256, size: int = 224) -> Path:
    manifest = load_manifest(bundle)
    src = bundle / manifest.files["encoder"].path
    images, _, _ = eval_arrays(data, size, n_images)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre))
        quantize_static(
            str(pre),
            str(bundle / INT8_FILE),
            ImageReader(images),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=float_tail_nodes(onnx.load(str(pre))),
        )
    files = {**manifest.files, "encoder_int8": BundleFile(path=INT8_FILE, sha256="")}
    write_manifest(bundle, manifest.model_copy(update={"files": files}))
    return bundle / INT8_FILE


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="spic-int8", description=__doc__.split("\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument(
        "--data", required=True, help=DATA_HELP.format(split="train") + "; calibration images"
    )
    p.add_argument("--images", type=int, default=256, help="calibration images (seeded subset)")
    args = p.parse_args(argv)
    size = load_manifest(args.bundle).preprocessing.size
    out = make_int8(args.bundle, split_folder(args.data, "train"), args.images, size)
    card = args.bundle / "MODEL_CARD.md"
    if card.exists():  # record this step with the others that made the bundle
        command = "spic-int8 " + " ".join(sys.argv[1:] if argv is None else argv)
        text = card.read_text()
        head, sep, rest = text.partition("## How it was made\n\n```bash\n")
        if sep:
            block, fence, tail = rest.partition("```")
            card.write_text(head + sep + block + command + "\n" + fence + tail)
    print(json.dumps({"int8_encoder": str(out), "model_id": load_manifest(args.bundle).model_id}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
