#!/usr/bin/env python3
"""Writes the tiny ONNX models the tests and `make run` use (each < 1 KiB).

Every model is GlobalAveragePool -> Flatten -> Gemm: the logits are an affine function of the
chip's mean R, G, B (after normalisation), so tests can compute the exact expected probabilities
from the weights below. Needs only the `onnx` package: `pip install onnx`.

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


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "fixtures/models")
    out.mkdir(parents=True, exist_ok=True)
    for name, spec in MODELS.items():
        path = out / name
        onnx.save(classifier(**spec), path)
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
