#!/usr/bin/env python3
"""Writes the tiny ONNX models the tests and `make run` use (each < 1 KiB).

Most models are GlobalAveragePool -> Flatten -> Gemm: the logits are an affine function of the
chip's mean R, G, B (after normalisation), so tests can compute the exact expected probabilities
from the weights below. Two more fail on purpose at run time (see fails_on_red and log_scores),
and one is slow on purpose (slow_rgb). Needs only the `onnx` package: `pip install onnx`.

    python3 scripts/make_fixture_models.py fixtures/models
"""
import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper


def classifier(channels, size, weights, bias, labels, batch="N"):
    """A [batch, channels, size, size] float32 -> [batch, len(labels)] logits classifier."""
    classes = len(weights)
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, channels, size, size])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])
    w = helper.make_tensor("W", TensorProto.FLOAT, [classes, channels], [v for row in weights for v in row])
    b = helper.make_tensor("B", TensorProto.FLOAT, [classes], bias)
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(nodes, "tiny_classifier", [image], [logits], [w, b])
    return finish(graph, labels)


def finish(graph, labels):
    """The model around `graph` (opset 13, IR 8), with its labels in the metadata, checked."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tilepredict-fixtures")
    model.ir_version = 8
    if labels is not None:
        helper.set_model_props(model, {"labels": ",".join(labels)})
    onnx.checker.check_model(model)
    return model


MODELS = {
    # Tests: logits = 8 * mean(R, G, B); an all-red chip is "red" with p = e^8 / (e^8 + 2).
    "rgb_tiny.onnx": dict(channels=3, size=32, weights=[[8, 0, 0], [0, 8, 0], [0, 0, 8]],
                          bias=[0, 0, 0], labels=["red", "green", "blue"]),
    # Same weights, no labels in the metadata: labels come from MODEL_LABELS or class_0..2.
    "rgb_tiny_nolabels.onnx": dict(channels=3, size=32, weights=[[8, 0, 0], [0, 8, 0], [0, 0, 8]],
                                   bias=[0, 0, 0], labels=None),
    # Same weights with a fixed batch dimension of 1: BATCH_SIZE must follow the model.
    "rgb_tiny_batch1.onnx": dict(channels=3, size=32, weights=[[8, 0, 0], [0, 8, 0], [0, 0, 8]],
                                 bias=[0, 0, 0], labels=["red", "green", "blue"], batch=1),
    # Wrong input: one channel. Init must refuse it, naming the shape.
    "grey_input.onnx": dict(channels=1, size=32, weights=[[1], [2]], bias=[0, 0], labels=["a", "b"]),
    # The demo model behind `make run`: grey, low-saturation roofs score as "asbestos",
    # red and green ones as "other". A toy, not a real roof classifier.
    "roof_demo.onnx": dict(channels=3, size=64, weights=[[4, -1, -1], [-2, 2, 2]],
                           bias=[0, 0.5], labels=["other", "asbestos"]),
}


def fails_on_red():
    """rgb_tiny's weights at a fixed batch of 1, whose logits are then gathered at columns
    [0, 1, 2], or [100, 101, 102] when the chip's mean red is over one half. The init probe
    (zeros) and non-red chips run; a red chip fails inside ONNX Runtime (Gather: index out of
    bounds), as a real model can at run time after passing every check at init. (A Reshape to a
    pixel-dependent shape does not do: ONNX Runtime's optimiser removes it.)"""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])
    init = [
        helper.make_tensor("W", TensorProto.FLOAT, [3, 3], [8, 0, 0, 0, 8, 0, 0, 0, 8]),
        helper.make_tensor("B", TensorProto.FLOAT, [3], [0, 0, 0]),
        helper.make_tensor("start", TensorProto.INT64, [1], [0]),
        helper.make_tensor("end", TensorProto.INT64, [1], [1]),
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
        helper.make_tensor("flat1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("columns", TensorProto.INT64, [3], [0, 1, 2]),
        helper.make_tensor("far", TensorProto.INT64, [], [100]),
    ]
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["raw"], transB=1),
        helper.make_node("Slice", ["flat", "start", "end", "axis1"], ["red"]),
        helper.make_node("Greater", ["red", "half"], ["is_red"]),
        helper.make_node("Cast", ["is_red"], ["extra"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["extra", "flat1"], ["extra1"]),
        helper.make_node("Mul", ["extra1", "far"], ["shift"]),
        helper.make_node("Add", ["columns", "shift"], ["indices"]),
        helper.make_node("Gather", ["raw", "indices"], ["logits"], axis=1),
    ]
    return finish(helper.make_graph(nodes, "fails_on_red", [image], [logits], init), ["red", "green", "blue"])


def log_scores():
    """logits = 8 * ln(mean R, G, B): finite for a chip with every channel lit, -inf for a
    black channel. A black chip gives all -inf logits, so its softmax is NaN: the function must
    answer inference_failed rather than a label picked from NaNs."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    eight = helper.make_tensor("eight", TensorProto.FLOAT, [], [8.0])
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Log", ["flat"], ["log"]),
        helper.make_node("Mul", ["log", "eight"], ["logits"]),
    ]
    return finish(helper.make_graph(nodes, "log_scores", [image], [logits], [eight]), ["red", "green", "blue"])


def slow_rgb(rounds=3):
    """rgb_tiny's answers after ~57 M multiply-adds per chip (a few ms on one core), in < 1 KiB:
    the flattened chip goes `rounds` times through a 3072 x 3072 MatMul whose matrix is made at
    load time (ConstantOfShape), and 1e-30 of the result's mean is added to rgb_tiny's logits,
    which leaves them unchanged in float32. Tests of concurrent requests use it so that chips
    arrive faster than the model runs them, and batches fill with several requests' chips."""
    side, width = 32, 3 * 32 * 32
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, side, side])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    init = [
        helper.make_tensor("W", TensorProto.FLOAT, [3, 3], [8, 0, 0, 0, 8, 0, 0, 0, 8]),
        helper.make_tensor("B", TensorProto.FLOAT, [3], [0, 0, 0]),
        helper.make_tensor("square", TensorProto.INT64, [2], [width, width]),
        helper.make_tensor("tiny", TensorProto.FLOAT, [], [1e-30]),
    ]
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["raw"], transB=1),
        helper.make_node("ConstantOfShape", ["square"], ["M"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0 / width])),
        helper.make_node("Flatten", ["image"], ["h0"], axis=1),
    ]
    for r in range(rounds):
        nodes.append(helper.make_node("MatMul", [f"h{r}", "M"], [f"h{r + 1}"]))
    nodes += [
        helper.make_node("ReduceMean", [f"h{rounds}"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["mean", "tiny"], ["nothing"]),
        helper.make_node("Add", ["raw", "nothing"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "slow_rgb", [image], [logits], init)
    return finish(graph, ["red", "green", "blue"])


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "fixtures/models")
    out.mkdir(parents=True, exist_ok=True)
    for name, spec in MODELS.items():
        path = out / name
        onnx.save(classifier(**spec), path)
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    # Tests: a model failing inside ONNX Runtime at run time, and one answering NaN.
    # And rgb_tiny made slow, for tests of concurrent requests sharing batches.
    for name, build in [("rgb_tiny_fails_on_red.onnx", fails_on_red), ("rgb_log_nan_on_black.onnx", log_scores),
                        ("rgb_slow.onnx", slow_rgb)]:
        path = out / name
        onnx.save(build(), path)
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
