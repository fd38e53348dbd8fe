"""A bundle's latent classifier replayed in torch from its ONNX file, so ``spic-head`` can read
its pooled features and fine-tune it without the checkpoint it was exported from.

A bundle ships ``classifier.onnx`` only (BatchNorm already folded into the convolutions by the
exporter), and heads are trained where the bundle is, not where it was trained. The graphs
``spic-export`` writes are plain conv nets: Conv, Relu / LeakyRelu, Add, pooling, Flatten and one
closing Gemm. ``OnnxTrunk`` runs every node up to that Gemm's input, each Conv a trainable
``nn.Conv2d`` holding the file's weights; ``OnnxTrunk.last`` is the Gemm as an ``nn.Linear``.
A graph with another operator is refused by name, not guessed at. With ``start`` it replays only
the layers after one of the graph's activations (what ``models.outlier_tune`` trains, reading the
frozen layers' output from onnxruntime), and ``write_onnx`` puts trained weights back into a copy
of the file, every other byte of the graph as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ELEMENTWISE = {"Relu", "LeakyRelu", "Sigmoid", "Identity", "Dropout"}
SUPPORTED = ELEMENTWISE | {
    "Conv",
    "Add",
    "GlobalAveragePool",
    "ReduceMean",
    "Flatten",
    "MaxPool",
    "Gemm",
}


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _path_to(nodes: Any, output: str) -> list[Any]:
    """The nodes ``output`` depends on, in graph order: the logits' path alone."""
    needed, keep = {output}, []
    for node in reversed(list(nodes)):
        if needed & set(node.output):
            keep.append(node)
            needed |= set(node.input)
    return keep[::-1]


def _after(nodes: list[Any], start: str, constants: set[str]) -> list[Any]:
    """The nodes of ``nodes`` computed from ``start``; refused if one also reads an activation
    from before it (a skip connection across ``start`` cannot be replayed from it alone)."""
    have, keep = {start}, []
    for node in nodes:
        inputs = [n for n in node.input if n and n not in constants]
        if have & set(inputs):
            if not set(inputs) <= have:
                raise ValueError(f"{node.name or node.op_type} also reads from before {start}")
            keep.append(node)
            have |= set(node.output)
    if not keep:
        raise ValueError(f"nothing on the logits' path is computed from {start}")
    return keep


class OnnxTrunk(nn.Module):
    """(N, C, h, w) latent -> (N, D) pooled features, as the ONNX classifier computes them before
    its last layer; ``last`` is that layer (D -> classes)."""

    def __init__(self, onnx_path: str | Path, start: str | None = None):
        super().__init__()
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(onnx_path)).graph
        init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        nodes = _path_to(graph.node, graph.output[0].name)  # a features output is not replayed
        if start is not None:
            nodes = _after(nodes, start, set(init))
        unknown = sorted({n.op_type for n in nodes} - SUPPORTED)
        if unknown:
            raise ValueError(f"{onnx_path}: operators {unknown} are not replayed by spic-head")
        gemms = [n for n in nodes if n.op_type == "Gemm"]
        if len(gemms) != 1 or nodes[-1].op_type != "Gemm":
            raise ValueError(f"{onnx_path}: not a classifier ending in one linear layer")
        self.input_name = start or graph.input[0].name
        self.weights: dict[str, tuple[str, str | None]] = {}  # conv key -> initializer names
        self.nodes: list[tuple[str, list[str], str, dict[str, Any], str]] = []
        self.convs = nn.ModuleDict()
        for i, node in enumerate(nodes[:-1]):
            attrs, key = _attrs(node), ""
            if node.op_type == "Conv":
                key = f"c{i}"
                w = init[node.input[1]]
                conv = nn.Conv2d(
                    w.shape[1] * attrs.get("group", 1),
                    w.shape[0],
                    tuple(w.shape[2:]),
                    stride=tuple(attrs.get("strides", [1, 1])),
                    padding=tuple(attrs.get("pads", [0, 0, 0, 0])[:2]),
                    dilation=tuple(attrs.get("dilations", [1, 1])),
                    groups=attrs.get("group", 1),
                    bias=len(node.input) > 2,
                )
                with torch.no_grad():
                    conv.weight.copy_(torch.from_numpy(np.array(w)))
                    if conv.bias is not None:
                        conv.bias.copy_(torch.from_numpy(np.array(init[node.input[2]])))
                self.convs[key] = conv
                self.weights[key] = (node.input[1], node.input[2] if len(node.input) > 2 else None)
            inputs = [n for n in node.input if n not in init or node.op_type != "Conv"]
            self.nodes.append((node.op_type, list(inputs), node.output[0], attrs, key))
        gemm = gemms[0]
        self.feature_name = gemm.input[0]
        w, b = init[gemm.input[1]], init[gemm.input[2]]
        self.last_names = (gemm.input[1], gemm.input[2], bool(_attrs(gemm).get("transB", 0)))
        if not self.last_names[2]:
            w = w.T
        self.width = int(w.shape[1])
        self.last = nn.Linear(self.width, int(w.shape[0]))
        with torch.no_grad():
            self.last.weight.copy_(torch.from_numpy(np.array(w)))
            self.last.bias.copy_(torch.from_numpy(np.array(b)))

    def _run(
        self, op: str, xs: list[torch.Tensor], attrs: dict[str, Any], key: str
    ) -> torch.Tensor:
        x = xs[0]
        if op == "Conv":
            return self.convs[key](x)  # type: ignore[no-any-return]
        if op == "Relu":
            return F.relu(x)
        if op == "LeakyRelu":
            return F.leaky_relu(x, attrs.get("alpha", 0.01))
        if op == "Sigmoid":
            return torch.sigmoid(x)
        if op in ("Identity", "Dropout"):
            return x
        if op == "Add":
            return xs[0] + xs[1]
        if op == "GlobalAveragePool":
            return x.mean((2, 3), keepdim=True)
        if op == "ReduceMean":
            return x.mean(tuple(attrs["axes"]), keepdim=bool(attrs.get("keepdims", 1)))
        if op == "Flatten":
            return x.flatten(attrs.get("axis", 1))
        if op == "MaxPool":
            pads = attrs.get("pads", [0, 0, 0, 0])
            return F.max_pool2d(x, attrs["kernel_shape"], attrs.get("strides", 1), pads[:2])
        raise ValueError(f"operator {op}")  # refused at load; here for the type checker

    def write_onnx(self, src: str | Path, dst: str | Path) -> None:
        """``src`` with this module's conv and last-layer weights in place of the file's."""
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(src))
        arrays: dict[str, torch.Tensor] = {}
        for key, (w_name, b_name) in self.weights.items():
            conv = self.convs[key]
            assert isinstance(conv, nn.Conv2d)
            arrays[w_name] = conv.weight
            if b_name is not None and conv.bias is not None:
                arrays[b_name] = conv.bias
        w_name, b_name, trans_b = self.last_names
        arrays[w_name] = self.last.weight if trans_b else self.last.weight.T
        arrays[b_name] = self.last.bias
        for t in model.graph.initializer:
            if t.name in arrays:
                value = arrays[t.name].detach().cpu().numpy().astype(np.float32)
                t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), t.name))
        onnx.save(model, str(dst))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        values = {self.input_name: latent}
        for op, inputs, output, attrs, key in self.nodes:
            values[output] = self._run(op, [values[n] for n in inputs], attrs, key)
        return values[self.feature_name]
