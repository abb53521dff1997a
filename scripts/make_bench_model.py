#!/usr/bin/env python3
"""Writes the benchmark model: a ResNet-18-shaped classifier at 3x128x128 with random, seeded
weights, a dynamic batch dimension and output [N, 2] (labels metadata "other,asbestos").

Same layers and parameter count as torchvision's resnet18 with a 2-class head (BatchNorm folded
into the convolutions, as ONNX Runtime does anyway), so ONNX Runtime does the same work as for a
real roof classifier: about 44.7 MB of float32 weights. The weights are random (He-scaled so the
activations stay finite); the predictions mean nothing, the timing is what matters.
Needs `onnx` and `numpy` (the Makefile installs both into .venv/):

    python3 scripts/make_bench_model.py .bench/resnet18_128.onnx
"""
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 18
SIZE = 128
LABELS = ["other", "asbestos"]


class Graph:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.weights = []
        self.count = 0

    def name(self, kind):
        self.count += 1
        return f"{kind}_{self.count}"

    def tensor(self, kind, array):
        name = self.name(kind)
        self.weights.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(self, x, c_in, c_out, k, stride, relu=True, gain=1.0):
        fan_in = c_in * k * k
        w = self.rng.standard_normal((c_out, c_in, k, k)) * gain * np.sqrt(2.0 / fan_in)
        b = self.rng.standard_normal(c_out) * 0.01
        out = self.name("conv")
        self.nodes.append(helper.make_node(
            "Conv", [x, self.tensor("W", w), self.tensor("B", b)], [out],
            kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        return self.relu(out) if relu else out

    def relu(self, x):
        out = self.name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [out]))
        return out

    def add(self, a, b):
        out = self.name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [out]))
        return out

    def basic_block(self, x, c_in, c_out, stride):
        # The residual branch's last conv is scaled down so the sum stays near unit variance.
        y = self.conv(x, c_in, c_out, 3, stride)
        y = self.conv(y, c_out, c_out, 3, 1, relu=False, gain=0.3)
        shortcut = x if stride == 1 and c_in == c_out else self.conv(x, c_in, c_out, 1, stride, relu=False)
        return self.relu(self.add(y, shortcut))


def resnet18(seed=SEED, size=SIZE, classes=len(LABELS)):
    g = Graph(seed)
    x = g.conv("image", 3, 64, 7, 2)
    pooled = g.name("maxpool")
    g.nodes.append(helper.make_node("MaxPool", [x], [pooled], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, c = pooled, 64
    for c_out, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        x = g.basic_block(x, c, c_out, stride)
        x = g.basic_block(x, c_out, c_out, 1)
        c = c_out
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    g.nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    w = g.rng.standard_normal((classes, c)) * np.sqrt(1.0 / c)
    b = np.zeros(classes)
    g.nodes.append(helper.make_node("Gemm", ["flat", g.tensor("fc_W", w), g.tensor("fc_B", b)], ["logits"], transB=1))

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])
    graph = helper.make_graph(g.nodes, "resnet18_bench", [image], [logits], g.weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tilepredict-bench")
    model.ir_version = 8
    helper.set_model_props(model, {"labels": ",".join(LABELS)})
    onnx.checker.check_model(model)
    return model


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".bench/resnet18_128.onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = resnet18()
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    tmp = out.with_suffix(".tmp")
    onnx.save(model, tmp)
    tmp.replace(out)
    print(f"wrote {out}: {params / 1e6:.2f} M parameters, {out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
