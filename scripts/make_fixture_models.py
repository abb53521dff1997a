#!/usr/bin/env python3
"""Writes the tiny ONNX models the tests and `make run` use (each < 1 KiB, committed).

Most models are GlobalAveragePool -> Flatten -> Gemm: the logits are an affine function of the
chip's mean R, G, B (after normalisation), so tests can compute the exact expected probabilities
from the weights below. Two more fail on purpose at run time (see fails_on_red and log_scores),
and one is slow on purpose (slow_rgb), and EXPORTS holds one model per head and input layout as
common exporters write them. Needs the `onnx` package (`make fixture-models` runs this with the
pinned one in .venv):

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
    [0, 1, 2], or [100, 101, 102] when the chip's mean red is over three quarters. The init
    probe (a mid-grey chip) and non-red chips run; a red chip fails inside ONNX Runtime (Gather:
    index out of bounds), as a real model can at run time after passing every check at init. (A
    Reshape to a pixel-dependent shape does not do: ONNX Runtime's optimiser removes it.)"""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])
    init = [
        helper.make_tensor("W", TensorProto.FLOAT, [3, 3], [8, 0, 0, 0, 8, 0, 0, 0, 8]),
        helper.make_tensor("B", TensorProto.FLOAT, [3], [0, 0, 0]),
        helper.make_tensor("start", TensorProto.INT64, [1], [0]),
        helper.make_tensor("end", TensorProto.INT64, [1], [1]),
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("half", TensorProto.FLOAT, [], [0.75]),
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


# --- Models shaped the way common exporters write them -------------------------------------
# Every one scores the chip's mean pixel: with m = mean(R, G, B) / 255 (per channel, after the
# model's own normalisation), the logits are W·m + b, so tests compute exact expected answers.
# Each names the exporter whose graph it mimics.

SIZE = 16
ROOF_W = [4.0, -2.0, -2.0]  # binary "asbestos" score: grey/red roofs high, green/blue low
ROOF_B = 0.5
MULTI_W = [[6, 0, 0], [0, 6, 0], [0, 0, 6], [3, 3, -6]]  # four independent labels
MULTI_B = [-3, -3, -3, -1]


def head(pooled_flat, weights, bias, out, nodes, inits, prefix=""):
    """Gemm: out = flat · Wᵀ + b."""
    rows = len(weights)
    inits += [helper.make_tensor(prefix + "W", TensorProto.FLOAT, [rows, 3], [v for r in weights for v in r]),
              helper.make_tensor(prefix + "B", TensorProto.FLOAT, [rows], bias)]
    nodes.append(helper.make_node("Gemm", [pooled_flat, prefix + "W", prefix + "B"], [out], transB=1))


def nchw_pool(nodes, image="image"):
    nodes += [helper.make_node("GlobalAveragePool", [image], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["flat"], axis=1)]
    return "flat"


def export(name, nodes, inits, inputs, outputs, metadata=None):
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = finish(graph, None)
    if metadata:
        helper.set_model_props(model, metadata)
    return model


def image_input(shape, elem=TensorProto.FLOAT, name="image"):
    return helper.make_tensor_value_info(name, elem, shape)


def scores(name, classes, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, ["N", classes])


def binary_logit():
    """PyTorch, a binary classifier trained with BCEWithLogitsLoss: `nn.Linear(c, 1)` as the
    head, exported by torch.onnx.export with no activation: [N,1] raw logit."""
    nodes, inits = [], []
    head(nchw_pool(nodes), [ROOF_W], [ROOF_B], "logit", nodes, inits)
    return export("binary_logit", nodes, inits, [image_input(["N", 3, SIZE, SIZE])], [scores("logit", 1)])


def binary_sigmoid():
    """Keras `Dense(1, activation="sigmoid")` through tf2onnx (or PyTorch with `nn.Sigmoid()`
    in the exported module): [N,1] already a probability."""
    nodes, inits = [], []
    head(nchw_pool(nodes), [ROOF_W], [ROOF_B], "z", nodes, inits)
    nodes.append(helper.make_node("Sigmoid", ["z"], ["probability"]))
    return export("binary_sigmoid", nodes, inits, [image_input(["N", 3, SIZE, SIZE])], [scores("probability", 1)])


def two_logits():
    """torchvision with a 2-class head trained with CrossEntropyLoss: [N,2] logits. Row 0 is
    all zeros, so the logits are [0, z] with binary_logit's z: the two must answer the same."""
    nodes, inits = [], []
    head(nchw_pool(nodes), [[0, 0, 0], ROOF_W], [0, ROOF_B], "logits", nodes, inits)
    return export("two_logits", nodes, inits, [image_input(["N", 3, SIZE, SIZE])], [scores("logits", 2)])


def two_softmax():
    """Keras `Dense(2, activation="softmax")` through tf2onnx, or a torchvision export with
    `nn.Softmax(dim=1)` kept in the module; the Softmax is followed by a Flatten and an
    Identity, as exporters often leave them: [N,2] probabilities. Same logits as two_logits."""
    nodes, inits = [], []
    head(nchw_pool(nodes), [[0, 0, 0], ROOF_W], [0, ROOF_B], "z", nodes, inits)
    nodes += [helper.make_node("Softmax", ["z"], ["p"], axis=1),
              helper.make_node("Flatten", ["p"], ["p_flat"], axis=1),
              helper.make_node("Identity", ["p_flat"], ["probabilities"])]
    return export("two_softmax", nodes, inits, [image_input(["N", 3, SIZE, SIZE])], [scores("probabilities", 2)])


def multilabel(with_sigmoid):
    """A multi-label roof classifier (PyTorch, BCEWithLogitsLoss over 4 labels): with the
    Sigmoid in the exported module ([N,4] probabilities, auto reads it), or without it ([N,4]
    raw logits, OUTPUT_KIND=multilabel). Labels in the metadata."""
    nodes, inits = [], []
    head(nchw_pool(nodes), MULTI_W, MULTI_B, "z" if with_sigmoid else "logits", nodes, inits)
    out = "logits"
    if with_sigmoid:
        nodes.append(helper.make_node("Sigmoid", ["z"], ["probabilities"]))
        out = "probabilities"
    return export("multilabel", nodes, inits, [image_input(["N", 3, SIZE, SIZE])], [scores(out, 4)],
                  {"labels": "red_roof,green_roof,blue_roof,bright"})


def keras_nhwc():
    """Keras/TensorFlow through tf2onnx: NHWC input [unk__,H,W,3] float32, the pooling done by
    ReduceMean over H and W, a softmax head ([N,2], same logits as two_logits)."""
    nodes, inits = [], []
    nodes.append(helper.make_node("ReduceMean", ["input_1"], ["flat"], axes=[1, 2], keepdims=0))
    head("flat", [[0, 0, 0], ROOF_W], [0, ROOF_B], "z", nodes, inits)
    nodes.append(helper.make_node("Softmax", ["z"], ["dense"], axis=-1))
    return export("keras_nhwc", nodes, inits, [image_input(["unk__612", SIZE, SIZE, 3], name="input_1")],
                  [scores("dense", 2)])


def uint8_input():
    """A model that takes raw pixels (TensorFlow/Keras with a `Rescaling(1/255)` layer, or a
    TFLite-style export): uint8 NHWC input, the scaling inside the graph. Same logits as
    two_logits."""
    nodes, inits = [], []
    inits.append(helper.make_tensor("inv255", TensorProto.FLOAT, [], [1.0 / 255.0]))
    nodes += [helper.make_node("Cast", ["pixels"], ["as_float"], to=TensorProto.FLOAT),
              helper.make_node("Mul", ["as_float", "inv255"], ["scaled"]),
              helper.make_node("ReduceMean", ["scaled"], ["flat"], axes=[1, 2], keepdims=0)]
    head("flat", [[0, 0, 0], ROOF_W], [0, ROOF_B], "logits", nodes, inits)
    return export("uint8_input", nodes, inits, [image_input(["N", SIZE, SIZE, 3], TensorProto.UINT8, "pixels")],
                  [scores("logits", 2)])


def float16_io():
    """A float16 export (PyTorch `model.half()`, or onnxconverter-common's float16 conversion
    with the body kept in float32 for the CPU): float16 input and output. Same logits as
    two_logits, to float16 precision."""
    nodes, inits = [], []
    nodes.append(helper.make_node("Cast", ["image"], ["image32"], to=TensorProto.FLOAT))
    head(nchw_pool(nodes, "image32"), [[0, 0, 0], ROOF_W], [0, ROOF_B], "logits32", nodes, inits)
    nodes.append(helper.make_node("Cast", ["logits32"], ["logits"], to=TensorProto.FLOAT16))
    return export("float16_io", nodes, inits, [image_input(["N", 3, SIZE, SIZE], TensorProto.FLOAT16)],
                  [scores("logits", 2, TensorProto.FLOAT16)])


def caffe_bgr():
    """An OpenCV/Caffe-trained model (Keras `preprocess_input` "caffe" mode): BGR channels,
    0–255 pixels minus the ImageNet means in B,G,R order, no scaling; all of it in the model's
    metadata, so it describes itself. Weights act on (B, G, R) − mean and are those of
    two_logits scaled by 1/255 and reordered, so on the same chip its logits are two_logits'
    minus the means' contribution (tests compute it)."""
    nodes, inits = [], []
    w_bgr = [v / 255.0 for v in reversed(ROOF_W)]
    head(nchw_pool(nodes), [[0, 0, 0], w_bgr], [0, ROOF_B], "logits", nodes, inits)
    return export("caffe_bgr", nodes, inits, [image_input(["N", 3, SIZE, SIZE])], [scores("logits", 2)],
                  {"labels": "other,asbestos", "input_channels": "bgr", "input_range": "byte",
                   "input_mean": "103.939,116.779,123.68"})


def two_outputs():
    """torchvision GoogLeNet/Inception-style export with auxiliary outputs: a feature map
    [N,3,1,1] first, then the main logits [N,3] (rgb_tiny's weights), then aux logits [N,3]
    (reversed weights). The function reads "logits" (the first [N,C]) and warns about the rest."""
    nodes, inits = [], []
    nodes += [helper.make_node("GlobalAveragePool", ["image"], ["features"]),
              helper.make_node("Flatten", ["features"], ["flat"], axis=1)]
    head("flat", [[8, 0, 0], [0, 8, 0], [0, 0, 8]], [0, 0, 0], "logits", nodes, inits)
    head("flat", [[0, 0, 8], [0, 8, 0], [8, 0, 0]], [0, 0, 0], "aux", nodes, inits, prefix="aux_")
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3, 1, 1])
    return export("two_outputs", nodes, inits, [image_input(["N", 3, SIZE, SIZE])],
                  [features, scores("logits", 3), scores("aux", 3)], {"labels": "red,green,blue"})


def dynamic_size():
    """A fully convolutional export with dynamic height and width ([N,3,?,?]): CHIP_SIZE (or
    the chip_size metadata) says what to feed. rgb_tiny's weights."""
    nodes, inits = [], []
    head(nchw_pool(nodes), [[8, 0, 0], [0, 8, 0], [0, 0, 8]], [0, 0, 0], "logits", nodes, inits)
    return export("dynamic_size", nodes, inits, [image_input(["N", 3, "height", "width"])], [scores("logits", 3)],
                  {"labels": "red,green,blue"})


def two_inputs():
    """Refused: a second input (a per-image scale) the function cannot feed."""
    nodes, inits = [], []
    flat = nchw_pool(nodes)
    head(flat, [ROOF_W], [ROOF_B], "z", nodes, inits)
    nodes.append(helper.make_node("Mul", ["z", "scale"], ["logit"]))
    return export("two_inputs", nodes, inits,
                  [image_input(["N", 3, SIZE, SIZE]), helper.make_tensor_value_info("scale", TensorProto.FLOAT, ["N", 1])],
                  [scores("logit", 1)])


def segmentation():
    """Refused: a segmentation head, [N,2,H,W] (a 1×1 convolution), not one row per chip."""
    w = helper.make_tensor("W", TensorProto.FLOAT, [2, 3, 1, 1], [1, 0, 0, 0, 1, 0])
    nodes = [helper.make_node("Conv", ["image", "W"], ["mask"])]
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 2, SIZE, SIZE])
    return export("segmentation", nodes, [w], [image_input(["N", 3, SIZE, SIZE])], [mask])


EXPORTS = {
    "binary_logit.onnx": binary_logit,
    "binary_sigmoid.onnx": binary_sigmoid,
    "two_logits.onnx": two_logits,
    "two_softmax.onnx": two_softmax,
    "multilabel_sigmoid.onnx": lambda: multilabel(True),
    "multilabel_logits.onnx": lambda: multilabel(False),
    "keras_nhwc.onnx": keras_nhwc,
    "uint8_input.onnx": uint8_input,
    "float16_io.onnx": float16_io,
    "caffe_bgr.onnx": caffe_bgr,
    "two_outputs.onnx": two_outputs,
    "dynamic_size.onnx": dynamic_size,
    "two_inputs.onnx": two_inputs,
    "segmentation.onnx": segmentation,
}


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
                        ("rgb_slow.onnx", slow_rgb), *EXPORTS.items()]:
        path = out / name
        onnx.save(build(), path)
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
