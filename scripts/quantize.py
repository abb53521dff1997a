#!/usr/bin/env python3
"""Writes an int8 copy of an ONNX model with ONNX Runtime's quantization tools: static
quantization in QDQ format, per-channel int8 weights, uint8 activations, calibrated on input
tensors the function itself made (`bootstrap chips` writes them, cut by its own imagery code and
normalised exactly as the model is fed), so calibration sees what inference sees.

Inputs and outputs stay float, and the metadata (labels, settings) is copied, so the function
loads the quantized model like the original. With --held-out, every fifth chip is kept out of
calibration and written to that file, for `bootstrap compare` (what `make quantize` runs next).

    python3 scripts/quantize.py MODEL.onnx CHIPS.npy OUT.onnx [--held-out HELD.npy]

Needs onnx, numpy and onnxruntime (the Makefile installs pinned ones into .venv/).
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

# Calibration batch: the activations' ranges are collected over every batch.
BATCH = 16
# One chip in HELD_OUT_EVERY is held out for the comparison when --held-out is given.
HELD_OUT_EVERY = 5


class Chips(CalibrationDataReader):
    """Feeds the calibration chips to the model's one input, BATCH at a time (or the model's
    fixed batch size)."""

    def __init__(self, name, chips, batch, fixed):
        self.name, self.chips, self.batch, self.fixed, self.at = name, chips, batch, fixed, 0

    def get_next(self):
        if self.at >= len(self.chips):
            return None
        part = self.chips[self.at:self.at + self.batch]
        self.at += self.batch
        if len(part) < self.batch and self.fixed:
            part = np.concatenate([part, np.zeros((self.batch - len(part),) + part.shape[1:], part.dtype)])
        return {self.name: part}

    def rewind(self):
        self.at = 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("chips", help="a .npy batch written by `bootstrap chips`")
    parser.add_argument("out")
    parser.add_argument("--held-out", help="write every fifth chip here, and calibrate on the rest")
    args = parser.parse_args()

    chips = np.load(args.chips)
    if args.held_out:
        held = np.arange(len(chips)) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
        np.save(args.held_out, chips[held])
        chips = chips[~held]
    if len(chips) == 0:
        sys.exit("quantize: no calibration chips")

    model = onnx.load(args.model)
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        sys.exit(f"quantize: the model has {len(inputs)} inputs; the function feeds one")
    if inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        sys.exit("quantize: static quantization needs a float32 input (this one is not)")
    batch_dim = inputs[0].type.tensor_type.shape.dim[0]
    reader = Chips(inputs[0].name, chips.astype(np.float32), batch_dim.dim_value or BATCH, batch_dim.dim_value > 0)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and graph fusions first, as ONNX Runtime's quantization guide asks.
        quant_pre_process(args.model, str(prepared))
        quantize_static(
            str(prepared), args.out, reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    quantized = onnx.load(args.out)
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(model.metadata_props)
    onnx.save(quantized, args.out)
    size = Path(args.out).stat().st_size / 1e6
    print(f"wrote {args.out}: {size:.1f} MB (float: {Path(args.model).stat().st_size / 1e6:.1f} MB), "
          f"calibrated on {len(chips)} chips"
          + (f", {int(held.sum())} held out in {args.held_out}" if args.held_out else ""))


if __name__ == "__main__":
    main()
