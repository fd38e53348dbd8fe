"""Give a classifier graph a ``features`` output: what a head's ``knn`` reject rule compares.

The shipped classifier (``classifier.onnx``) answers logits only. The reject rule measured best
(``docs/research/unknown.md``) reads the trunk's activations before its last stage, max-pooled
over space: more of what the image holds than the last, class-shaped layer keeps. This adds that
tensor as a second output, ``features`` (N, D), and leaves every weight and the logits as they were,
so the codec id and the head's answers do not change; only the head's file (and id) does.

    python -m models.head_graph models/bundles/spic-imagenette/classifier.onnx \
        --tensor /features/features.4/Relu_1_output_0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from shared.manifest import MANIFEST_NAME, load_manifest, write_manifest

FEATURES = "features"


def add_features(graph_path: Path, tensor: str, out: Path | None = None) -> Path:
    """Write ``graph_path`` (in place unless ``out``) with ``features`` = GlobalMaxPool(tensor)."""
    model = onnx.load(str(graph_path))
    g = model.graph
    if any(o.name == FEATURES for o in g.output):
        raise ValueError(f"{graph_path} already has a {FEATURES} output")
    if not any(tensor in n.output for n in g.node):
        raise ValueError(f"{graph_path} has no tensor {tensor}")
    pooled = f"{FEATURES}_pooled"
    g.node.append(helper.make_node("GlobalMaxPool", [tensor], [pooled], name="features_pool"))
    g.node.append(helper.make_node("Flatten", [pooled], [FEATURES], name="features_flat", axis=1))
    g.output.append(helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["N", "D"]))
    onnx.checker.check_model(model)
    target = out or graph_path
    onnx.save(model, str(target))
    return target


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("graph", type=Path, help="a classifier graph (input latent, output logits)")
    p.add_argument("--tensor", required=True, help="the activation to max-pool into features")
    p.add_argument("--out", type=Path, help="where to write (default: in place)")
    args = p.parse_args(argv)
    target = add_features(args.graph, args.tensor, args.out)
    bundle = target.parent
    if (bundle / MANIFEST_NAME).is_file():  # a bundle's graph: re-seal it; its codec id stays
        before = load_manifest(bundle, check=False)
        after = write_manifest(bundle, before)
        assert after.model_id == before.model_id, "the codec id moved"
        print(f"re-sealed {bundle}: codec {after.model_id}")
    print(target)


if __name__ == "__main__":
    main()
